"""Checkpoint I/O: strict loading with clear errors, save/load round trip."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import TRELLIS_FIXTURES, require_dir
from trellis_ext.models import CheckpointError, from_pretrained, save_pretrained
from trellis_ext.pipelines import ImageTo3DPipeline, PipelineLoadError


@pytest.fixture()
def ckpt(tmp_path):
    src = require_dir(TRELLIS_FIXTURES / "tiny" / "ss_flow", "TRELLIS tiny ss_flow fixture")
    shutil.copy(src / "model.json", tmp_path / "m.json")
    shutil.copy(src / "model.safetensors", tmp_path / "m.safetensors")
    return tmp_path / "m"


def test_loads_and_round_trips(ckpt, tmp_path):
    model = from_pretrained(str(ckpt))
    out = tmp_path / "saved" / "again"
    save_pretrained(model, str(out))
    again = from_pretrained(str(out))
    assert json.loads((tmp_path / "saved" / "again.json").read_text())["name"] == "SparseStructureFlowModel"
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert load_file(str(out) + ".safetensors").keys() == load_file(str(ckpt) + ".safetensors").keys()


def test_missing_key_is_named(ckpt):
    sd = load_file(str(ckpt) + ".safetensors")
    sd.pop("blocks.1.mlp.mlp.0.weight")
    save_file(sd, str(ckpt) + ".safetensors")
    with pytest.raises(CheckpointError, match=r"missing keys: blocks\.1\.mlp\.mlp\.0\.weight") as e:
        from_pretrained(str(ckpt))
    assert "SparseStructureFlowModel" in str(e.value) and "m.safetensors" in str(e.value)


def test_unexpected_key_is_named(ckpt):
    sd = load_file(str(ckpt) + ".safetensors")
    sd["blocks.9.extra"] = torch.zeros(1)
    save_file(sd, str(ckpt) + ".safetensors")
    with pytest.raises(CheckpointError, match=r"unexpected keys: blocks\.9\.extra"):
        from_pretrained(str(ckpt))


def test_wrong_shape_is_named(ckpt):
    sd = load_file(str(ckpt) + ".safetensors")
    sd["out_layer.weight"] = torch.zeros(3, 3)
    save_file(sd, str(ckpt) + ".safetensors")
    with pytest.raises(CheckpointError, match=r"out_layer\.weight \(checkpoint \[3, 3\] vs model \[8, 64\]\)"):
        from_pretrained(str(ckpt))


def test_truncated_file(ckpt):
    path = str(ckpt) + ".safetensors"
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        from_pretrained(str(ckpt))


def test_unknown_class(ckpt):
    cfg = json.loads((ckpt.parent / "m.json").read_text())
    cfg["name"] = "NoSuchModel"
    (ckpt.parent / "m.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unknown model class 'NoSuchModel'"):
        from_pretrained(str(ckpt))


def test_malformed_json(ckpt):
    (ckpt.parent / "m.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="malformed model config"):
        from_pretrained(str(ckpt))


def test_bad_args(ckpt):
    cfg = json.loads((ckpt.parent / "m.json").read_text())
    cfg["args"]["no_such_arg"] = 1
    (ckpt.parent / "m.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="cannot build SparseStructureFlowModel"):
        from_pretrained(str(ckpt))


def test_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="model config not found"):
        from_pretrained(str(tmp_path / "nothing"))


def test_pipeline_folder_errors(tmp_path):
    with pytest.raises(PipelineLoadError, match="is not a folder"):
        ImageTo3DPipeline.from_pretrained(str(tmp_path / "absent"))
    with pytest.raises(PipelineLoadError, match="pipeline.json not found"):
        ImageTo3DPipeline.from_pretrained(str(tmp_path))
    (tmp_path / "pipeline.json").write_text('{"name": "Other", "args": {"models": {}}}')
    with pytest.raises(PipelineLoadError, match="expected one of"):
        ImageTo3DPipeline.from_pretrained(str(tmp_path))

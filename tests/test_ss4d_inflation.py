"""Inflation from a TRELLIS folder and strict loading of the SS4D folder layout."""
import shutil

import pytest
import torch

from conftest import SS4D_FIXTURES, TRELLIS_FIXTURES, require_dir
from ss4d.models import inflate_from_trellis
from ss4d.models.inflation import TRELLIS_KEYS, load_inflation_config
from trellis_ext.pipelines.base import PipelineLoadError, load_models, read_pipeline_json
from trellis_ext.pipelines.tiny import randomize_weights
from trellis_ext.sparse import SparseTensor

SS4D_KEYS = ("sparse_structure_flow_model", "sparse_structure_decoder", "slat_flow_model", "slat_decoder_gs")
TOL = 1e-4


@pytest.fixture(scope="module")
def trellis_folder():
    return require_dir(TRELLIS_FIXTURES / "tiny_pipeline", "TRELLIS tiny_pipeline fixture")


@pytest.fixture(scope="module")
def inflated(trellis_folder):
    return inflate_from_trellis(str(trellis_folder))


def test_every_trellis_weight_is_carried_over(trellis_folder, inflated):
    spec = read_pipeline_json(str(trellis_folder))
    trellis = load_models(str(trellis_folder), {k: spec["args"]["models"][k] for k in TRELLIS_KEYS})
    for key in TRELLIS_KEYS:
        sd4, sd3 = inflated[key].state_dict(), trellis[key].state_dict()
        for k, v in sd3.items():
            assert torch.equal(sd4[k], v), f"{key}.{k} changed during inflation"
        new = set(sd4) - set(sd3)
        if key == "slat_flow_model":
            assert new and all(k.startswith(("input_blocks_t.", "out_blocks_t.")) for k in new)
        else:
            assert not new, f"{key} gained parameters {sorted(new)[:5]}"


def test_new_compnet_parameters_start_as_identity(inflated):
    flow = inflated["slat_flow_model"]
    for name, p in flow.named_parameters():
        if name.startswith(("input_blocks_t.", "out_blocks_t.")) and ".conv2." in name:
            assert torch.count_nonzero(p) == 0, f"{name} should start at zero"
    for block in flow.out_blocks_t:
        w = block.skip_connection.weight
        c = w.shape[0]
        assert torch.equal(w[:, :c], torch.eye(c)) and torch.count_nonzero(w[:, c:]) == 0


def test_inflated_models_equal_trellis_on_one_frame(trellis_folder, inflated):
    spec = read_pipeline_json(str(trellis_folder))
    trellis = load_models(str(trellis_folder), {k: spec["args"]["models"][k] for k in TRELLIS_KEYS})
    gen = torch.Generator().manual_seed(0)
    flow3, flow4 = trellis["sparse_structure_flow_model"], inflated["sparse_structure_flow_model"]
    r = flow3.resolution
    x = torch.randn(1, flow3.in_channels, r, r, r, generator=gen)
    t = torch.tensor([500.0])
    cond = torch.randn(1, 6, 32, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(flow4(x, t, cond, num_frames=1), flow3(x, t, cond), atol=TOL, rtol=TOL)

    coords = torch.unique(torch.randint(0, 32, (200, 3), generator=gen), dim=0)
    coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.long), coords], 1).int()
    latents = SparseTensor(torch.randn(len(coords), 8, generator=gen), coords)
    with torch.no_grad():
        g3 = trellis["slat_decoder_gs"](latents)[0]
        g4 = inflated["slat_decoder_gs"](latents, num_frames=1)[0]
    torch.testing.assert_close(g4.get_xyz, g3.get_xyz, atol=TOL, rtol=TOL)
    torch.testing.assert_close(g4.get_features, g3.get_features, atol=TOL, rtol=TOL)


def test_inflated_slat_flow_on_two_identical_frames_equals_trellis(trellis_folder):
    spec = read_pipeline_json(str(trellis_folder))
    trellis = load_models(str(trellis_folder), {k: spec["args"]["models"][k] for k in TRELLIS_KEYS})
    config = load_inflation_config()
    config["slat_flow_model"]["temporal_mean_mode"] = "exact"
    flow4 = inflate_from_trellis(trellis, config)["slat_flow_model"]
    flow3 = trellis["slat_flow_model"]
    gen = torch.Generator().manual_seed(1)
    xyz = torch.unique(torch.randint(0, 32, (150, 3), generator=gen), dim=0).int()
    feats = torch.randn(len(xyz), 8, generator=gen)
    one = SparseTensor(feats, torch.cat([torch.zeros(len(xyz), 1, dtype=torch.int32), xyz], 1))
    two = SparseTensor(torch.cat([feats, feats]), torch.cat([
        torch.cat([torch.full((len(xyz), 1), f, dtype=torch.int32), xyz], 1) for f in (0, 1)]))
    t = torch.tensor([400.0])
    cond = torch.randn(1, 6, 32, generator=gen)
    with torch.no_grad():
        v3 = flow3(one, t, cond)
        v4 = flow4(two, t.repeat(2), cond.repeat(2, 1, 1), num_frames=2)
    torch.testing.assert_close(v4.feats[: len(xyz)], v3.feats, atol=TOL, rtol=TOL)
    torch.testing.assert_close(v4.feats[len(xyz):], v3.feats, atol=TOL, rtol=TOL)


def test_official_ss4d_folder_loads_strictly(tmp_path):
    folder = require_dir(SS4D_FIXTURES / "tiny_pipeline", "SS4D tiny_pipeline fixture")
    spec = read_pipeline_json(str(folder), ["TrellisVideoTo4DPipeline"])
    models = load_models(str(folder), spec["args"]["models"], required=SS4D_KEYS)
    assert type(models["slat_decoder_gs"]).__name__ == "SLatGaussianDecoder4D"
    assert type(models["slat_flow_model"]).__name__ == "SLatFlow4DModel"
    # a copy with one tensor removed must fail loudly, naming the key
    copy = tmp_path / "ss4d"
    shutil.copytree(folder, copy)
    from safetensors.torch import load_file, save_file
    stem = copy / (spec["args"]["models"]["slat_flow_model"] + ".safetensors")
    sd = load_file(str(stem))
    sd.pop("input_blocks_t.0.conv1.conv.weight")
    save_file(sd, str(stem))
    with pytest.raises(PipelineLoadError, match=r"input_blocks_t\.0\.conv1\.conv\.weight"):
        load_models(str(copy), spec["args"]["models"])

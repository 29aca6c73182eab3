"""SS4D compatibility: official key/shape manifests and tiny 4D-model numerics.

Scans ``$SS4D_SS4D_FIXTURES`` (default ../shared/ss4d_reference): ``manifests/*.json`` and every
``model.json`` folder (``tiny/``, ``tiny_extra/``, ...), cases from the sub-folders; the forward
call is chosen by the class name in the JSON (4D classes get ``num_frames`` from the inputs).
"""
import json

import pytest
import torch

import ss4d.models  # noqa: F401  (registers the 4D classes)
from conftest import REPO, SS4D_FIXTURES, require_dir
from trellis_ext import fixtures
from trellis_ext.models import get_model_class

ATOL = RTOL = 1e-4
CONFIGS = REPO / "configs" / "ss4d"

fixtures.register_runner("SparseStructureFlow4DModel", "SLatFlow4DModel")(fixtures.RUNNERS["SLatFlowModel"])
fixtures.register_runner("SLatGaussianDecoder4D")(fixtures.RUNNERS["SLatGaussianDecoder"])
POSTERIOR_SEED = 123  # the fixture draws z_posterior right after torch.manual_seed(123)


@fixtures.register_runner("SLatEncoder4D")
def _run_encoder_4d(model, inputs):
    out = fixtures.RUNNERS["SLatEncoder"](model, inputs)
    torch.manual_seed(POSTERIOR_SEED)
    out.update(fixtures.flatten_outputs("z_posterior", model(inputs["x"], num_frames=inputs["num_frames"])))
    return out

MANIFESTS = fixtures.discover_manifests(SS4D_FIXTURES) if SS4D_FIXTURES.is_dir() else []
MODELS = fixtures.discover_models(SS4D_FIXTURES) if SS4D_FIXTURES.is_dir() else []
CASES = [(m, cfg, case) for m in MODELS for cfg in m.configs for case in m.cases]


def test_fixture_root_present():
    require_dir(SS4D_FIXTURES, "SS4D reference fixtures")
    assert MANIFESTS and MODELS


@pytest.mark.parametrize("manifest_path", MANIFESTS, ids=[p.stem for p in MANIFESTS])
def test_manifest_keys_shapes_dtypes(manifest_path):
    """The model built from our ``configs/ss4d/<name>.json`` (the manifest's own checkpoint JSON when
    we ship no config of that name) has exactly the official keys, shapes and dtypes."""
    problems = fixtures.check_config_against_manifest(manifest_path, CONFIGS)
    assert not problems, "\n".join(problems[:20])


@pytest.mark.parametrize("model_fixture,config,case", CASES,
                         ids=[f"{m.id}:{c.stem}:{case.name}" for m, c, case in CASES])
def test_tiny_model_reproduces_reference(model_fixture, config, case, tmp_path):
    cfg = json.loads(config.read_text())
    model = fixtures.load_fixture_model(model_fixture, config, tmp_path)
    cls = get_model_class(cfg["name"], cfg["args"])
    assert type(model) is cls
    problems = fixtures.run_case(model, cls.__name__, case, atol=ATOL, rtol=RTOL)
    assert not problems, "\n".join(problems)

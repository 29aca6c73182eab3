"""TRELLIS compatibility: official key/shape manifests and tiny-model numerics.

Discovers everything by scanning ``$SS4D_TRELLIS_FIXTURES`` (default ../shared/trellis_reference):
``manifests/*.json`` and every ``model.json`` folder below the root; the forward call is chosen by
the class name in the JSON. Point the env var at another folder of the same layout to check other
configs, seeds or batch sizes.
"""
import json

import pytest

from conftest import REPO, TRELLIS_FIXTURES, require_dir
from trellis_ext import fixtures
from trellis_ext.models import get_model_class

ATOL = RTOL = 1e-4
CONFIGS = REPO / "configs" / "trellis"
MANIFESTS = fixtures.discover_manifests(TRELLIS_FIXTURES) if TRELLIS_FIXTURES.is_dir() else []
MODELS = fixtures.discover_models(TRELLIS_FIXTURES) if TRELLIS_FIXTURES.is_dir() else []
CASES = [(m, cfg, case) for m in MODELS for cfg in m.configs for case in m.cases]


def test_fixture_root_present():
    require_dir(TRELLIS_FIXTURES, "TRELLIS reference fixtures")
    assert MANIFESTS, f"no manifests under {TRELLIS_FIXTURES}"
    assert MODELS, f"no tiny models under {TRELLIS_FIXTURES}"


@pytest.mark.parametrize("manifest_path", MANIFESTS, ids=[p.stem for p in MANIFESTS])
def test_manifest_keys_shapes_dtypes(manifest_path):
    """The model built from our ``configs/trellis/<name>.json`` (the manifest's own checkpoint JSON when
    we ship no config of that name) has exactly the official keys, shapes and dtypes."""
    problems = fixtures.check_config_against_manifest(manifest_path, CONFIGS)
    assert not problems, "\n".join(problems[:20])


@pytest.mark.parametrize("model_fixture,config,case", CASES,
                         ids=[f"{m.id}:{c.stem}:{case.name}" for m, c, case in CASES])
def test_tiny_model_reproduces_reference(model_fixture, config, case, tmp_path):
    cfg = json.loads(config.read_text())
    class_name = cfg["name"]
    model = fixtures.load_fixture_model(model_fixture, config, tmp_path)
    assert type(model) is get_model_class(class_name, cfg["args"])
    problems = fixtures.run_case(model, class_name, case, atol=ATOL, rtol=RTOL)
    assert not problems, "\n".join(problems)

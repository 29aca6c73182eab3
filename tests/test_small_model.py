"""The small SS4D shipped in checkpoints/ss4d-small: it loads strictly, fits the size budget, is the default model,
and generates on CPU what it generated when it was installed (checkpoints/ss4d-small/reference.json: every
generation parameter comes from that file)."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from ss4d.default_model import SMALL_MODEL_DIR, resolve_model
from ss4d.reference_outputs import REFERENCE_FILE, generate_fingerprint

REFERENCE = SMALL_MODEL_DIR / REFERENCE_FILE
MAX_FILE_MB, MAX_TOTAL_MB = 16, 64      # the budget for the shipped weights
VOXEL_SLACK = 0.01                      # occupancy thresholds may flip on a few voxels on another CPU
ATOL = 2e-3                             # the per-frame means (positions in [-0.5, 0.5], colours, scales)

pytestmark = pytest.mark.skipif(not REFERENCE.is_file(), reason="checkpoints/ss4d-small has no reference.json")


def test_weights_fit_the_budget_and_are_safetensors():
    files = sorted(SMALL_MODEL_DIR.rglob("*.safetensors"))
    sizes = {f.name: f.stat().st_size / 2 ** 20 for f in files}
    assert max(sizes.values()) <= MAX_FILE_MB and sum(sizes.values()) <= MAX_TOTAL_MB, sizes
    assert not list(SMALL_MODEL_DIR.rglob("*.pt")) and not list(SMALL_MODEL_DIR.rglob("*.pth"))


def test_outputs_on_the_fixed_input_match_the_stored_reference():
    ref = json.loads(REFERENCE.read_text())
    got, want = generate_fingerprint(SMALL_MODEL_DIR, ref), ref["fingerprint"]   # strict loading inside
    assert len(got["voxels_per_frame"]) == ref["frames"] and min(got["voxels_per_frame"]) > 0
    for g, w in zip(got["voxels_per_frame"], want["voxels_per_frame"]):
        assert abs(g - w) <= max(1, VOXEL_SLACK * w), (got["voxels_per_frame"], want["voxels_per_frame"])
    for key in ("xyz_mean", "rgb_mean", "opacity_mean", "scale_mean"):
        np.testing.assert_allclose(got[key], want[key], atol=ATOL, err_msg=key)


@pytest.fixture
def no_official_weights(monkeypatch, tmp_path):
    """No $SS4D_MODEL and a working directory without checkpoints/SS4D."""
    from ss4d.default_model import OFFICIAL_DIR, REPO

    if (REPO / OFFICIAL_DIR).is_dir():
        pytest.skip(f"{REPO / OFFICIAL_DIR} exists: the official weights are the default here")
    monkeypatch.delenv("SS4D_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)


def test_it_is_the_default_model_without_official_weights(no_official_weights, tmp_path, monkeypatch):
    import ss4d

    path, how = resolve_model()
    assert Path(path) == SMALL_MODEL_DIR and "small" in how
    assert Path(ss4d.Pipeline.from_pretrained().source) == SMALL_MODEL_DIR
    (tmp_path / "checkpoints" / "SS4D").mkdir(parents=True)          # an official folder in the working directory
    assert resolve_model()[0] == os.path.join("checkpoints", "SS4D")
    monkeypatch.setenv("SS4D_MODEL", str(tmp_path / "elsewhere"))     # $SS4D_MODEL wins, even when missing
    assert resolve_model() == (str(tmp_path / "elsewhere"), "$SS4D_MODEL")
    assert resolve_model("given") == ("given", "--model")


def test_ss4d_generate_without_model_runs_the_small_model_and_says_so(no_official_weights, tmp_path, capsys):
    from ss4d.cli import main
    from ss4d.default_model import REPO

    code = main([str(REPO / "assets" / "dancing_robot_fg.mp4"), "-o", str(tmp_path / "out"), "--frames", "2",
                 "--steps-ss", "1", "--steps-slat", "1", "--render", "none", "--no-progress", "--device", "cpu"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"model {SMALL_MODEL_DIR} (the small SS4D trained by ss4d" in out.out + out.err
    assert "RANDOM" not in out.out + out.err
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert Path(result["model"]["path"]) == SMALL_MODEL_DIR and result["model"]["random_weights"] is False

"""``ss4d-eval benchmark`` end to end on one shipped asset with the tiny random pipeline (small settings)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ss4d.evaluation.benchmark import SHEET_VIEW
from ss4d.evaluation.cli import main
from ss4d.evaluation.report import SHEET_GAP, SHEET_LABEL_HEIGHT
from ss4d.tiny import write_tiny_video_to_4d

SHARED = Path(__file__).resolve().parents[2] / "shared"
ASSET = SHARED / "data" / "assets" / "RiggedFigure.glb"
SMALL = ["--views", "2", "--frames", "2", "--resolution", "64", "--sheet-times", "2", "--no-progress", "--device", "cpu"]

pytestmark = pytest.mark.skipif(not ASSET.is_file(), reason=f"shared test assets not found at {ASSET}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    assets = root / "assets"
    assets.mkdir()
    shutil.copy(ASSET, assets)
    (assets / "broken.glb").write_bytes(b"not a glTF file")  # reported, the rest still scored
    return assets, write_tiny_video_to_4d(str(root / "tiny_ss4d"))


def test_benchmark_report(setup, tmp_path, capsys):
    assets, model = setup
    out = tmp_path / "report"
    code = main(["benchmark", "--assets", str(assets), "--model", str(model), "-o", str(out),
                 "--weights", str(tmp_path / "none"), *SMALL])
    err = capsys.readouterr().err
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["random_weights"] is True
    (failed, why), = report["failures"].items()
    assert failed.startswith("broken.glb") and "ground truth failed" in why
    (clip_id, asset), = report["per_asset"].items()
    assert asset["sample"]["views"] == 2 and asset["sample"]["frames"] == [0, 1]
    assert asset["sample"]["alignment_matrix"] == np.eye(4).tolist()  # front input camera: exact
    overall = report["overall"]
    for m in ("psnr", "ssim", "iou", "flicker", "chamfer"):
        assert overall[m]["status"] == "computed"
        assert overall[m]["value"] == pytest.approx(asset["metrics"][m]["value"])
    for m in ("lpips_vgg", "lpips_alex", "clip", "fvd"):
        assert overall[m]["value"] is None and "no weights" in overall[m]["reason"]
    md = (out / "report.md").read_text()
    assert "## Not scored" in md and "broken.glb" in md
    assert "RANDOM weights" in md and "fvd: skipped — no weights" in md and "psnr: computed over 1 assets" in md
    assert (out / "outputs" / clip_id / "result.json").is_file()
    assert (out / "dataset" / "clips" / clip_id / "clip.json").is_file()
    sheet = np.asarray(Image.open(out / "contact_sheet.png"))
    tile = 128
    assert sheet.shape[0] == 3 * (tile + SHEET_LABEL_HEIGHT + SHEET_GAP) + SHEET_GAP  # input / generated / GT rows
    assert sheet.shape[1] == 2 * (tile + SHEET_GAP) + SHEET_GAP
    # the ground-truth row shows the object (not blank) at the sheet's view
    y = SHEET_GAP + 2 * (tile + SHEET_LABEL_HEIGHT + SHEET_GAP) + SHEET_LABEL_HEIGHT
    assert (sheet[y:y + tile, SHEET_GAP:SHEET_GAP + tile] < 250).any(), SHEET_VIEW


def test_benchmark_bad_input(setup, tmp_path, capsys):
    assets, model = setup
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    cases = [
        (["--assets", str(assets), "--model", str(tmp_path / "nope"), "-o", str(tmp_path / "r")], "model folder"),
        (["--assets", str(tmp_path / "none"), "--model", str(model), "-o", str(tmp_path / "r")], "does not exist"),
        (["--assets", str(assets), "--model", str(model), "-o", str(tmp_path / "r"), "--frames", "3"], "is odd"),
        (["--assets", str(assets), "--model", str(model), "-o", str(occupied)], "not empty"),
    ]
    for args, expect in cases:
        code = main(["benchmark", *args, "--no-progress", "--device", "cpu"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and expect in err[0], (args, err)
    assert (occupied / "keep.txt").read_text() == "mine" and not (tmp_path / "r").exists()


def test_benchmark_scores_the_named_animations_sampled_as_asked(setup, tmp_path, capsys):
    """--animations picks the clips (here the Fox's held-out-style "Run", not its first "Survey"); --time-mode
    stretch spreads the frames over the whole clip, as the small model's data was built."""
    fox = SHARED / "data" / "assets" / "Fox.glb"
    _, model = setup
    out = tmp_path / "report"
    code = main(["benchmark", "--assets", str(fox), "--model", str(model), "-o", str(out), "--animations", "Run",
                 "--time-mode", "stretch", "--weights", str(tmp_path / "none"), *SMALL])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert list(report["per_asset"]) == ["Fox__2-Run"] and not report["failures"]
    assert (report["settings"]["animations"], report["settings"]["time_mode"]) == ("Run", "stretch")
    clip = json.loads((out / "dataset" / "clips" / "Fox__2-Run" / "clip.json").read_text())
    times = clip["times"]
    assert clip["time_mode_used"] == "stretch" and times[0] == pytest.approx(0.0) and times[-1] == pytest.approx(1.158, abs=1e-3)   # the clip's whole span


def test_benchmark_overwrite_replaces_its_own_report_and_nothing_of_the_users(setup, tmp_path, capsys):
    """``--overwrite`` replaces a previous benchmark's report folder (every file in it listed by its report.json);
    seen before the fix: "is not an ss4d output (no result.json written by ss4d-generate)" for a folder the
    benchmark itself had written, so a re-evaluation always stopped. A file the user added there stops it."""
    assets, model = setup
    out = tmp_path / "report"
    args = ["benchmark", "--assets", str(assets), "--model", str(model), "-o", str(out),
            "--weights", str(tmp_path / "none"), *SMALL]
    assert main(args) == 0, capsys.readouterr().err
    first = json.loads((out / "report.json").read_text())
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert sorted(first["files"]) == sorted(f for f in written if f != "report.json")
    (out / "report.md").write_text("stale")
    assert main(args + ["--overwrite"]) == 0, capsys.readouterr().err
    assert (out / "report.md").read_text() != "stale" and (out / "report.json").is_file()
    (out / "my_notes.txt").write_text("mine")
    assert main(args + ["--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "my_notes.txt" in err and (out / "my_notes.txt").read_text() == "mine"

"""``ss4d-eval images``: folder layouts, results on disk, and one clear line (exit 2) for each bad input."""
import json
import math

import numpy as np
import pytest
from PIL import Image

from ss4d.evaluation.cli import main
from ss4d.evaluation.metrics import PSNR_EPS
from ss4d.evaluation.sequences import frame_number, read_consistent4d


def _frames(t=4, size=24, seed=0, shift=0):
    """RGBA uint8 [T, size, size, 4]: a textured square moving right one pixel per frame."""
    rng = np.random.default_rng(seed)
    tex = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = np.zeros((t, size, size, 4), np.uint8)
    for i in range(t):
        x0 = 4 + i + shift
        out[i, 6:18, x0:x0 + 10, :3] = tex[6:18, x0:x0 + 10]
        out[i, 6:18, x0:x0 + 10, 3] = 255
    return out


def _write(root, views, names="{}.png", mode="RGBA"):
    for v, frames in views.items():
        d = root / v if v else root
        d.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(frames):
            Image.fromarray(f if mode == "RGBA" else f[..., :3], mode).save(d / names.format(i))
    return root


def _run(capsys, *args):
    code = main(list(map(str, args)))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_identical_folders_score_perfectly(tmp_path, capsys):
    views = {"view_a": _frames(), "view_b": _frames(seed=1)}
    pred = _write(tmp_path / "pred", views, names="frame_{:03d}.png")
    gt = _write(tmp_path / "gt", views)
    code, out, err = _run(capsys, "images", "--pred", pred, "--gt", gt, "-o", tmp_path / "m.json",
                          "--weights", tmp_path / "none")
    assert code == 0, err
    res = json.loads((tmp_path / "m.json").read_text())
    m = res["metrics"]
    assert abs(m["psnr"]["value"] + 10 * math.log10(PSNR_EPS)) < 1e-3
    assert abs(m["ssim"]["value"] - 1) < 1e-6 and m["iou"]["value"] == 1.0
    assert m["flicker"]["value"] == pytest.approx(m["flicker"]["ground_truth"])
    assert m["lpips_vgg"]["value"] is None and "no weights" in m["lpips_vgg"]["reason"]
    assert res["num_views"] == 2 and res["num_frames"] == 4
    assert len(res["views"]["view_a"]["per_frame"]["psnr"]) == 4
    md = (tmp_path / "m.md").read_text()
    assert "PSNR" in md and "Not computed" in md and "LPIPS-VGG: no weights" in md


def test_shift_lowers_scores_and_crop_focuses_on_the_object(tmp_path, capsys):
    gt = _write(tmp_path / "gt", {"": _frames()})  # frames directly in the folder: one view
    pred = _write(tmp_path / "pred", {"": _frames(shift=1)})
    res = {}
    for crop in ("none", "gt-bbox"):
        code, _, err = _run(capsys, "images", "--pred", pred, "--gt", gt, "--crop", crop, "-o", tmp_path / f"{crop}.json",
                            "--weights", tmp_path / "none")
        assert code == 0, err
        res[crop] = json.loads((tmp_path / f"{crop}.json").read_text())["metrics"]
    for m in res.values():
        assert m["psnr"]["value"] < 40 and m["ssim"]["value"] < 1 and m["iou"]["value"] < 1
    # cropping to the object removes the easy background: lower PSNR than on the whole image
    assert res["gt-bbox"]["psnr"]["value"] < res["none"]["psnr"]["value"]


def test_rgb_images_skip_silhouette(tmp_path, capsys):
    pred = _write(tmp_path / "pred", {"v": _frames()}, mode="RGB")
    gt = _write(tmp_path / "gt", {"v": _frames()}, mode="RGB")
    code, _, err = _run(capsys, "images", "--pred", pred, "--gt", gt, "-o", tmp_path / "m.json",
                        "--weights", tmp_path / "none")
    assert code == 0, err
    m = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert m["iou"]["value"] is None and "alpha" in m["iou"]["reason"]


def test_consistent4d_layout_scores_each_object(tmp_path, capsys):
    views = {f"eval_{i}": _frames(seed=i) for i in range(4)}
    for obj, shift in (("trump", 0), ("skull", 1)):
        _write(tmp_path / "gt" / obj, dict(views, train=_frames(seed=9)))
        _write(tmp_path / "pred" / obj, {k: np.roll(v, shift, axis=2) for k, v in views.items()})
    assert sorted(read_consistent4d(tmp_path / "gt" / "trump")) == [f"eval_{i}" for i in range(4)]
    code, out, err = _run(capsys, "images", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt",
                          "--layout", "consistent4d", "-o", tmp_path / "m.json", "--weights", tmp_path / "none")
    assert code == 0, err
    res = json.loads((tmp_path / "m.json").read_text())
    objs = res["objects"]
    assert sorted(objs) == ["skull", "trump"] and objs["trump"]["num_views"] == 4  # "train" is not an eval view
    assert objs["trump"]["metrics"]["ssim"]["value"] == pytest.approx(1.0)
    assert objs["skull"]["metrics"]["ssim"]["value"] < 1.0
    mean = (objs["trump"]["metrics"]["psnr"]["value"] + objs["skull"]["metrics"]["psnr"]["value"]) / 2
    assert res["metrics"]["psnr"]["value"] == pytest.approx(mean) and res["metrics"]["psnr"]["items"] == 2
    assert "**overall**" in out and "| skull |" in out
    # one object folder works too
    code, _, err = _run(capsys, "images", "--pred", tmp_path / "pred" / "skull", "--gt", tmp_path / "gt" / "skull",
                        "--layout", "consistent4d", "--weights", tmp_path / "none")
    assert code == 0, err
    assert frame_number(tmp_path / "12_rgba.png") == 12 and frame_number(tmp_path / "x.png") is None


@pytest.mark.parametrize("case,expect", [
    ("frames", "frames differ"),
    ("size", "is 20x20"),
    ("pred_size", "image sizes differ"),
    ("views", "views differ"),
    ("empty_alpha", "alpha is empty"),
    ("no_images", "holds no images"),
    ("weights", "VGG16.*not found"),
    ("metric", "unknown metric"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, case, expect):
    gt_views = {"a": _frames(), "b": _frames(seed=1)}
    pred_views = {"a": _frames(), "b": _frames(seed=1)}
    extra = []
    if case == "frames":
        pred_views["b"] = _frames(t=3, seed=1)
    elif case == "views":
        del pred_views["b"]
    elif case == "empty_alpha":
        gt_views["a"] = gt_views["a"].copy()
        gt_views["a"][..., 3] = 0
    elif case == "pred_size":
        pred_views["a"] = _frames(size=28)
    elif case == "weights":
        extra = ["--metrics", "psnr,lpips_vgg"]
    elif case == "metric":
        extra = ["--metrics", "psnr,nope"]
    gt = _write(tmp_path / "gt", gt_views)
    pred = _write(tmp_path / "pred", pred_views)
    if case == "size":
        Image.fromarray(_frames(size=20)[0]).save(gt / "a" / "2.png")
    if case == "no_images":
        pred = tmp_path / "empty"
        pred.mkdir()
    code, out, err = _run(capsys, "images", "--pred", pred, "--gt", gt, "-o", tmp_path / "m.json",
                          "--weights", tmp_path / "none", *extra)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ss4d-eval: error:"), err
    assert __import__("re").search(expect, lines[0]), lines[0]
    assert not (tmp_path / "m.json").exists()

"""``ss4d-eval asset`` and the input-camera alignment, on samples built by the data toolkit.

Known Gaussians are placed on the ground-truth voxels of each frame, expressed in the model frame
through the alignment (as a generator that saw the input video would place them), written as an
ss4d output folder, and scored: silhouettes must match the toolkit's renders and the voxels must
coincide; the wrong alignment must score clearly worse.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ss4d.data.build import BuildConfig, DatasetBuilder
from ss4d.data.layout import FolderDataset
from ss4d.data.render import RenderSettings
from ss4d.data.voxelize import voxel_centers
from ss4d.evaluation.alignment import input_alignment, reference_camera, transform_points
from ss4d.evaluation.cli import main
from ss4d.export import frame_name, save_coords
from trellis_ext.representations.gaussian import Gaussian, save_ply

SHARED = Path(__file__).resolve().parents[2] / "shared"
ASSET = SHARED / "data" / "assets" / "RiggedFigure.glb"
FRAMES, VIEWS, RES = 2, 3, 128
GAUSSIAN_SIGMA_VOXELS = 0.5   # isotropic std of the stand-in Gaussians, in voxels
MATCH_IOU = 0.75              # silhouettes of surface-voxel Gaussians vs the mesh renders (1-px fattening)
MIN_ROTATION_DEG = 30.0       # the random conditioning camera must be far from the front one

pytestmark = pytest.mark.skipif(not ASSET.is_file(), reason=f"shared test assets not found at {ASSET}")


def _build(root: Path, cond_camera: str) -> Path:
    render = RenderSettings(num_views=VIEWS, resolution=RES, cond_camera=cond_camera, cond_resolution=RES,
                            cond_video=False, seed=3)
    cfg = BuildConfig(output=root, frames=FRAMES, render=render, renderer="torch",
                      steps=("mesh", "voxelize", "render", "cond"), progress=False)
    DatasetBuilder(cfg).run([str(ASSET)])
    return root


def _fake_output(ds: FolderDataset, clip_id: str, out: Path, alignment: np.ndarray) -> Path:
    """An ss4d output folder whose Gaussians/voxels are the ground truth's voxels in the model frame."""
    to_model = np.linalg.inv(alignment)
    coords = []
    for t in range(FRAMES):
        idx, res = ds.load_voxels(clip_id, t)
        pts = transform_points(voxel_centers(idx, res), to_model)
        n = len(pts)
        g = Gaussian()
        g.from_xyz(torch.tensor(pts, dtype=torch.float32))
        g.from_features(torch.zeros(n, 3))
        g.from_scaling(torch.full((n, 3), GAUSSIAN_SIGMA_VOXELS / res))
        g.from_rotation(torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1))
        g.from_opacity(torch.full((n, 1), 0.99))
        (out / "gaussians").mkdir(parents=True, exist_ok=True)
        save_ply(g, out / "gaussians" / frame_name(t, "ply"))
        coords.append(np.unique(np.clip(np.floor((pts + 0.5) * res), 0, res - 1).astype(np.int32), axis=0))
    save_coords(coords, out / "coords", 64)
    (out / "result.json").write_text(json.dumps({"num_frames": FRAMES, "resolution": 64,
                                                 "input": {"source_frames": list(range(FRAMES))},
                                                 "model": {"random_weights": False}}))
    return out


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_asset")
    out = {}
    for mode in ("front", "random"):
        ds = FolderDataset(_build(root / f"ds_{mode}", mode))
        clip_id = ds.clip_records()[0]["clip_id"]
        _, cams = ds.load_cond(clip_id)
        align = input_alignment(cams[0])
        out[mode] = (ds, clip_id, align, _fake_output(ds, clip_id, root / f"out_{mode}", align))
    return out


def _score(capsys, tmp, sample, alignment):
    ds, clip_id, _, output = sample
    report = tmp / f"{alignment}.json"
    code = main(["asset", "--output", str(output), "--gt", str(ds.root / "clips" / clip_id), "-o", str(report),
                 "--alignment", alignment, "--weights", str(tmp / "none"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 0, err
    return json.loads(report.read_text())["metrics"]


def test_front_conditioning_camera_is_exactly_the_identity(samples):
    _, _, align, _ = samples["front"]
    assert np.array_equal(align, np.eye(4))


def test_alignment_maps_reference_camera_onto_conditioning_camera(samples):
    ds, clip_id, align, _ = samples["random"]
    _, cams = ds.load_cond(clip_id)
    ref = reference_camera(cams[0])
    assert np.allclose(align[:3, :3] @ ref.c2w_blender[:3, :3], cams[0].c2w_blender[:3, :3], atol=1e-9)
    assert np.allclose(align[:3, :3] @ ref.position, cams[0].position, atol=1e-9)
    angle = math.degrees(math.acos(np.clip((np.trace(align[:3, :3]) - 1) / 2, -1, 1)))
    assert angle > MIN_ROTATION_DEG, "the seeded random camera should be far from the front camera"


def test_front_sample_silhouettes_and_voxels_match(samples, tmp_path, capsys):
    m = _score(capsys, tmp_path, samples["front"], "input-view")
    assert m["iou"]["value"] > MATCH_IOU
    assert m["chamfer"]["value"] < 1e-6  # the same voxels
    assert m["psnr"]["status"] == "computed" and m["lpips_vgg"]["value"] is None


def test_random_sample_needs_the_alignment(samples, tmp_path, capsys):
    aligned = _score(capsys, tmp_path, samples["random"], "input-view")
    canonical = _score(capsys, tmp_path, samples["random"], "canonical")
    assert aligned["iou"]["value"] > MATCH_IOU
    assert aligned["chamfer"]["value"] < 2.0 / 64  # rounding the rotated voxels back onto the grid
    assert canonical["iou"]["value"] < aligned["iou"]["value"] - 0.2
    assert canonical["chamfer"]["value"] > 3 * aligned["chamfer"]["value"]


def test_not_an_output_and_bad_sample_are_one_line_errors(samples, tmp_path, capsys):
    ds, clip_id, _, output = samples["front"]
    cases = [
        (["--output", str(tmp_path), "--gt", str(ds.root / "clips" / clip_id)], "not an ss4d output folder"),
        (["--output", str(output), "--gt", str(tmp_path)], "not a dataset sample"),
        (["--output", str(output), "--gt", str(ds.root), "--clip", "nope"], "clip 'nope' is not in"),
        (["--output", str(output), "--gt", str(ds.root), "--views", "99"], "the sample has 3 views"),
    ]
    for args, expect in cases:
        code = main(["asset", *args, "--weights", str(tmp_path / "none")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and expect in err[0], (args, err)

"""scripts/train/stage_iou.py: its view score puts Gaussians and the dataset's renders in one frame (Gaussians on a
frame's true voxels match that frame's silhouettes, a shifted copy does not, another pose less), and its true voxels
are each frame's feature voxels, folded as (t, x, y, z)."""
import numpy as np
import pytest
import torch

from train_testkit import FEATURE_SET, tiny_dataset  # noqa: F401
from test_small_model_recipe import REPO, load_script

from ss4d.data.layout import FolderDataset
from ss4d.data.voxelize import voxel_centers
from ss4d.frames import unfold_sparse_coords
from trellis_ext.representations.gaussian import Gaussian

SIGMA_VOXELS = 0.5   # isotropic std of the stand-in Gaussians, in voxels


def _voxel_gaussians(idx: np.ndarray, res: int, shift: float = 0.0) -> Gaussian:
    pts = torch.tensor(voxel_centers(idx, res), dtype=torch.float32) + shift
    n = len(pts)
    g = Gaussian()
    g.from_xyz(pts)
    g.from_features(torch.zeros(n, 3))
    g.from_scaling(torch.full((n, 3), SIGMA_VOXELS / res))
    g.from_rotation(torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1))
    g.from_opacity(torch.full((n, 1), 0.99))
    return g


@pytest.fixture(scope="module")
def mod():
    return load_script(REPO / "scripts" / "train" / "stage_iou.py")


def _clip(ds, name: str) -> tuple:
    r = next(r for r in ds.clip_records() if r.get("status") == "ok" and name in r["clip_id"])
    return r["clip_id"], r["num_frames"]


def _gaussians(ds, clip, frames, shift: float = 0.0) -> list:
    return [_voxel_gaussians(*ds.load_voxels(clip, t), shift=shift) for t in frames]


def test_view_iou_scores_true_voxels_high_and_misplaced_ones_low(mod, tiny_dataset):  # noqa: F811
    ds = FolderDataset(tiny_dataset)
    cube, n = _clip(ds, "AnimatedMorphCube")                  # a solid shape: its voxels cover its silhouettes
    frames = [0, n - 1]
    assert mod.view_iou(_gaussians(ds, cube, frames), ds, cube, frames) > 0.9
    man, n = _clip(ds, "CesiumMan")                            # a walk: each frame's pose is its own
    frames = [0, n - 1]
    true = _gaussians(ds, man, frames)
    good = mod.view_iou(true, ds, man, frames)
    assert mod.view_iou(_gaussians(ds, man, frames, shift=0.25), ds, man, frames) < good / 2   # a quarter-grid shift
    assert mod.view_iou(true[::-1], ds, man, frames) < good - 0.05
    assert mod.view_iou(true, ds, man, frames, view_step=2) == pytest.approx(      # the mean over frames and views
        np.mean([mod.view_iou([g], ds, man, [t], view_step=2) for g, t in zip(true, frames)]))


def test_true_voxels_are_each_frames_feature_voxels(mod, tiny_dataset):  # noqa: F811
    ds = FolderDataset(tiny_dataset)
    clip = next(r["clip_id"] for r in ds.clip_records() if r.get("status") == "ok")
    frames = [0, 1, 2]
    coords, feats = mod.true_voxels(ds, clip, frames, FEATURE_SET)
    assert coords.shape[1] == 4 and len(coords) == len(feats)
    per_frame = unfold_sparse_coords(coords, len(frames))
    for t, c in zip(frames, per_frame):
        idx, f = ds.load_features(clip, FEATURE_SET, t)
        assert torch.equal(torch.as_tensor(c).long()[:, -3:], torch.from_numpy(np.asarray(idx)).long())
    assert torch.equal(feats, torch.cat([torch.from_numpy(np.asarray(ds.load_features(clip, FEATURE_SET, t)[1],
                                                                      dtype=np.float32)) for t in frames]))

"""Consistency checks between voxels and renders (used by the tests; handy for dataset QA).

Voxel silhouette = the rasterised union of the voxel cubes. Surface voxels stick out of the true
surface by up to one voxel, so the voxel silhouette is the render silhouette *dilated by about one
voxel footprint*. At 64^3 that dilation is large next to thin limbs (a 4-voxel-wide arm becomes ~5
voxels wide), which caps the raw IoU of thin characters near 0.75 even when everything is right.
:func:`silhouette_agreement` therefore reports

* ``iou``: raw IoU(voxel silhouette, alpha >= 0.5);
* ``iou_matched``: IoU against the alpha mask dilated by one voxel footprint (what a perfect
  surface voxelisation would produce);
* ``coverage``: fraction of the rendered silhouette covered by voxels (should be ~1: voxels cover
  the surface);
* ``precision``: fraction of the voxel silhouette within the alpha mask dilated by
  ``sqrt(3)`` voxel footprints (voxels never stray further from the surface).

A camera/axis/frame mix-up drives all four far below their thresholds.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .cameras import BlenderCamera
from .rasterize import cpu_threads, rasterize
from .voxelize import voxels_to_mesh

ALPHA_THRESHOLD = 128  # uint8 alpha >= this counts as foreground


def voxel_silhouette(indices: np.ndarray, resolution: int, camera: BlenderCamera) -> np.ndarray:
    """bool [H, W]: pixels covered by any voxel cube."""
    v, f = voxels_to_mesh(indices, resolution)
    w2c = camera.w2c_opencv
    vc = torch.as_tensor(v @ w2c[:3, :3].T + w2c[:3, 3])
    with cpu_threads(1):
        frag = rasterize(vc, torch.as_tensor(f), torch.as_tensor(camera.intrinsics()), camera.height, camera.width)
    return frag.face.numpy() >= 0


def voxel_footprint_px(camera: BlenderCamera, resolution: int) -> float:
    """Projected size in pixels of one voxel at the scene centre."""
    return float(camera.intrinsics()[0, 0] / resolution / np.linalg.norm(camera.position))


def silhouette_agreement(indices: np.ndarray, resolution: int, alpha: np.ndarray, camera: BlenderCamera) -> dict:
    """Compare the voxel silhouette with a rendered alpha channel (uint8 [H, W]); see module doc."""
    from scipy.ndimage import distance_transform_edt

    vox = voxel_silhouette(indices, resolution, camera)
    fg = np.asarray(alpha) >= ALPHA_THRESHOLD
    dist = distance_transform_edt(~fg)  # pixels to the nearest foreground pixel
    px = voxel_footprint_px(camera, resolution)
    near = dist <= max(1.0, px)
    far = dist <= max(1.0, math.sqrt(3.0) * px) + 1.0

    def iou(a, b):
        union = np.logical_or(a, b).sum()
        return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)

    return {"iou": iou(vox, fg), "iou_matched": iou(vox, near),
            "coverage": float((vox & fg).sum() / max(fg.sum(), 1)),
            "precision": float((vox & far).sum() / max(vox.sum(), 1))}

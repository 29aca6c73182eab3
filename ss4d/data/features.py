"""Per-voxel DINOv2 features aggregated over rendered views (TRELLIS-style, with visibility).

For each voxel centre and each view the centre is projected with the view's OpenCV camera; the
view's 37 x 37 patch-token map (raw ``x_prenorm``) is sampled bilinearly there
(``grid_sample``, ``align_corners=False``: the map covers the whole image). Aggregation:

* ``mean`` - average over every view the centre projects into (TRELLIS; hidden voxels included);
* ``visible`` - average only over views where the centre passes a depth test against that
  view's rendered depth: ``z_voxel <= z_surface + tolerance``, ``tolerance =
  visibility_tolerance * sqrt(3) / res`` (voxel diagonals; a surface voxel's centre can lie up to
  half a diagonal behind the surface it contains). ``z_surface`` is the largest depth among the
  2 x 2 pixels around the projection (lenient at silhouettes; background counts as infinitely far).

Voxels that receive no view are dropped (with ``visible``: voxels occluded in every view).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .cameras import BlenderCamera
from .voxelize import voxel_centers

AGGREGATIONS = ("visible", "mean")
DEFAULT_VISIBILITY_TOLERANCE = 1.0  # in voxel diagonals
DEFAULT_BATCH_SIZE = 16  # views per DINOv2 forward pass


@dataclass
class VoxelFeatures:
    """Aggregated features of one frame.

    indices: int64 [M, 3] kept voxels (subset of the input, same order). feats: float32 [M, C].
    num_views: int64 [M] views that contributed per kept voxel. kept: bool [N] mask over the input.
    """

    indices: np.ndarray
    feats: np.ndarray
    num_views: np.ndarray
    kept: np.ndarray


def project_to_views(points: np.ndarray, cameras: list[BlenderCamera]) -> tuple[np.ndarray, np.ndarray]:
    """World points [N, 3] -> pixel coordinates [V, N, 2] and camera depths [V, N]."""
    xy, z = zip(*(cam.project(points) for cam in cameras))
    return np.stack(xy), np.stack(z)


def visibility(points: np.ndarray, cameras: list[BlenderCamera], depths: np.ndarray, tolerance: float) -> np.ndarray:
    """bool [V, N]: point inside view v's image and not behind the rendered surface by > tolerance.

    ``depths`` [V, H, W] are planar camera depths (``inf`` = background) at each camera's size.
    """
    xy, z = project_to_views(points, cameras)
    n_views, h, w = depths.shape
    out = np.zeros(z.shape, dtype=bool)
    for v in range(n_views):
        x, y = xy[v, :, 0], xy[v, :, 1]
        inside = (x >= 0) & (x < w) & (y >= 0) & (y < h) & (z[v] > 0)
        # the 2 x 2 pixel centres around (x, y): columns floor(x - 0.5) and +1, same for rows
        c0 = np.clip(np.floor(x - 0.5).astype(np.int64), 0, w - 1)
        r0 = np.clip(np.floor(y - 0.5).astype(np.int64), 0, h - 1)
        c1, r1 = np.clip(c0 + 1, 0, w - 1), np.clip(r0 + 1, 0, h - 1)
        d = depths[v]
        surf = np.maximum(np.maximum(d[r0, c0], d[r0, c1]), np.maximum(d[r1, c0], d[r1, c1]))
        out[v] = inside & (z[v] <= surf + tolerance)
    return out


def in_image(points: np.ndarray, cameras: list[BlenderCamera]) -> np.ndarray:
    """bool [V, N]: point projects inside view v's image (in front of the camera)."""
    xy, z = project_to_views(points, cameras)
    w = np.array([c.width for c in cameras])[:, None]
    h = np.array([c.height for c in cameras])[:, None]
    return (xy[..., 0] >= 0) & (xy[..., 0] < w) & (xy[..., 1] >= 0) & (xy[..., 1] < h) & (z > 0)


def aggregate_features(indices: np.ndarray, resolution: int, feature_maps: torch.Tensor, cameras: list[BlenderCamera],
                       depths: np.ndarray | None = None, aggregation: str = "visible",
                       visibility_tolerance: float = DEFAULT_VISIBILITY_TOLERANCE) -> VoxelFeatures:
    """Average per-view patch features at the voxel centres.

    Args:
        indices: [N, 3] voxel indices on the ``resolution`` grid.
        feature_maps: [V, C, g, g] per-view feature maps covering each whole image.
        cameras: V cameras (their width/height define the pixel frame of ``depths``).
        depths: [V, H, W] planar depths, required for ``visible``.
        aggregation: ``visible`` or ``mean``.
        visibility_tolerance: depth-test slack in voxel diagonals.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if len(cameras) != feature_maps.shape[0]:
        raise ValueError(f"{len(cameras)} cameras but {feature_maps.shape[0]} feature maps")
    pts = voxel_centers(indices, resolution).astype(np.float64)
    if aggregation == "visible":
        if depths is None:
            raise ValueError("aggregation 'visible' needs rendered depth maps")
        tol = visibility_tolerance * math.sqrt(3.0) / resolution
        use = visibility(pts, cameras, np.asarray(depths, np.float32), tol)
    else:
        use = in_image(pts, cameras)
    xy, _ = project_to_views(pts, cameras)
    sizes = np.array([[c.width, c.height] for c in cameras], np.float64)[:, None, :]
    grid = torch.as_tensor(xy / sizes * 2.0 - 1.0, dtype=feature_maps.dtype, device=feature_maps.device)
    sampled = F.grid_sample(feature_maps, grid[:, :, None, :], mode="bilinear", align_corners=False)[..., 0]
    weight = torch.as_tensor(use, dtype=feature_maps.dtype, device=feature_maps.device)  # [V, N]
    total = torch.einsum("vcn,vn->nc", sampled, weight)
    count = use.sum(0)
    kept = count > 0
    feats = (total[torch.as_tensor(kept, device=total.device)]
             / torch.as_tensor(count[kept], dtype=total.dtype, device=total.device)[:, None])
    return VoxelFeatures(indices=np.asarray(indices, np.int64)[kept], feats=feats.float().cpu().numpy(),
                         num_views=count[kept].astype(np.int64), kept=kept)


def images_to_tensor(rgba: np.ndarray) -> torch.Tensor:
    """uint8 RGBA [V, H, W, 4] -> float RGB [V, 3, H, W] in [0, 1], premultiplied on black (TRELLIS)."""
    x = torch.as_tensor(np.asarray(rgba), dtype=torch.float32) / 255.0
    rgb = x[..., :3] * x[..., 3:4]
    return rgb.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def extract_patch_maps(encoder, images: torch.Tensor, batch_size: int = DEFAULT_BATCH_SIZE) -> torch.Tensor:
    """DINOv2 patch maps [V, C, g, g] for RGB images [V, 3, H, W] in [0, 1] (batched)."""
    maps = [encoder.patch_features(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat(maps, 0)

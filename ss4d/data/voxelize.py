"""Surface voxelisation on the TRELLIS grid (exact triangle/box overlap, numpy).

Grid: ``res^3`` cubic voxels covering [-0.5, 0.5]^3, voxel size ``1 / res``; voxel (i, j, k)
spans ``[-0.5 + i / res, -0.5 + (i + 1) / res]`` along x (same for y / z) and has its centre at
``(idx + 0.5) / res - 0.5``. A voxel is occupied iff some triangle intersects the closed voxel
box (separating-axis test with the 13 axes of the classic triangle/box test), which is what
TRELLIS gets from open3d's ``VoxelGrid.create_from_triangle_mesh_within_bounds``. Geometry
outside the cube is ignored. Ties: a face lying exactly on a grid plane is assigned to the voxel
layer above it.

Indices are stored as ``[N, 3]`` (x, y, z) sorted by the linear index ``x * res^2 + y * res + z``
(the x-major order of TRELLIS's dense grids).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DEFAULT_RESOLUTION = 64
MAX_CANDIDATES_PER_CHUNK = 1 << 20  # (triangle, voxel) pairs tested at once
SAT_EPS = 1e-9  # in voxel units; makes the closed-box test robust to rounding
HALF = 0.5  # half voxel size in voxel units


def voxelize_surface(vertices: np.ndarray, faces: np.ndarray, resolution: int = DEFAULT_RESOLUTION) -> np.ndarray:
    """Voxels of the grid intersected by the triangle surface.

    Args:
        vertices: [V, 3] positions in the normalised frame ([-0.5, 0.5]^3).
        faces: [F, 3] vertex indices.
        resolution: grid size per axis.

    Returns:
        int64 [N, 3] voxel indices (x, y, z), sorted (see module docstring).
    """
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be [V, 3], got {v.shape}")
    if len(f) == 0:
        return np.zeros((0, 3), np.int64)
    tri = (v[f] + 0.5) * resolution  # [F, 3, 3] in voxel units
    tmin, tmax = tri.min(1), tri.max(1)
    lo = np.clip(np.floor(tmin), 0, resolution - 1).astype(np.int64)
    hi = np.clip(np.floor(tmax), 0, resolution - 1).astype(np.int64)
    inside = (tmax >= 0).all(1) & (tmin <= resolution).all(1) & np.isfinite(tri).all((1, 2))
    ext = np.maximum(hi - lo + 1, 0)
    counts = np.where(inside, ext.prod(1), 0)
    ids = np.nonzero(counts)[0]
    if ids.size == 0:
        return np.zeros((0, 3), np.int64)
    counts = counts[ids]
    cum = np.cumsum(counts)
    found = []
    start = 0
    while start < len(ids):
        base = cum[start - 1] if start > 0 else 0
        stop = max(int(np.searchsorted(cum, base + MAX_CANDIDATES_PER_CHUNK, side="right")), start + 1)
        found.append(_chunk(tri, ids[start:stop], counts[start:stop], lo, ext, resolution))
        start = stop
    lin = np.unique(np.concatenate(found))
    r2 = resolution * resolution
    return np.stack([lin // r2, (lin // resolution) % resolution, lin % resolution], 1)


def _chunk(tri, ids, cnt, lo, ext, res):
    t = np.repeat(ids, cnt)
    local = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    ey, ez = ext[t, 1], ext[t, 2]
    vox = lo[t] + np.stack([local // (ey * ez), (local // ez) % ey, local % ez], 1)
    # cheap plane test first (most candidates of large triangles fail it), then the full test
    rel = tri[t] - (vox + HALF)[:, None, :]
    keep = _plane_overlap(rel)
    rel, vox = rel[keep], vox[keep]
    vox = vox[triangle_box_overlap(rel)]
    return (vox[:, 0] * res + vox[:, 1]) * res + vox[:, 2]


def _plane_overlap(tri: np.ndarray, half: float = HALF, eps: float = SAT_EPS) -> np.ndarray:
    e0 = tri[:, 1] - tri[:, 0]
    e1 = tri[:, 2] - tri[:, 1]
    n = np.cross(e0, e1)
    an = np.abs(n).sum(1)
    return np.abs((n * tri[:, 0]).sum(1)) <= half * an + eps * (1.0 + an)


def triangle_box_overlap(tri: np.ndarray, half: float = HALF, eps: float = SAT_EPS) -> np.ndarray:
    """Exact overlap test of triangles [N, 3, 3] (coordinates relative to the box centre) with the
    closed axis-aligned box ``[-half, half]^3`` (separating-axis theorem, 13 axes). Returns bool [N]."""
    lim = half + eps
    ok = (tri.min(1) <= lim).all(1) & (tri.max(1) >= -lim).all(1)  # box face normals
    ok &= _plane_overlap(tri, half, eps)  # triangle plane
    p = [tri[:, k] for k in range(3)]  # vertices, each [N, 3]
    for i in range(3):  # edge x box-axis cross products
        e = p[(i + 1) % 3] - p[i]
        ex, ey, ez = e[:, 0], e[:, 1], e[:, 2]
        for a0, a1, b0, b1 in ((ez, ey, 1, 2), (ex, ez, 2, 0), (ey, ex, 0, 1)):
            # axis = e x unit_j: projection of vertex q is a0 * q[b0] - a1 * q[b1]
            proj = [a0 * q[:, b0] - a1 * q[:, b1] for q in p]
            r = half * (np.abs(a0) + np.abs(a1))
            tol = eps * (1.0 + np.abs(a0) + np.abs(a1))
            lo = np.minimum(np.minimum(proj[0], proj[1]), proj[2])
            hi = np.maximum(np.maximum(proj[0], proj[1]), proj[2])
            ok &= (lo <= r + tol) & (hi >= -r - tol)
    return ok


def voxel_centers(indices: np.ndarray, resolution: int = DEFAULT_RESOLUTION) -> np.ndarray:
    """Voxel indices [N, 3] -> centre positions [N, 3] in [-0.5, 0.5]^3 (float32)."""
    return ((np.asarray(indices, np.float64) + 0.5) / resolution - 0.5).astype(np.float32)


def linear_index(indices: np.ndarray, resolution: int) -> np.ndarray:
    idx = np.asarray(indices, np.int64)
    return (idx[:, 0] * resolution + idx[:, 1]) * resolution + idx[:, 2]


def dense_grid(indices: np.ndarray, resolution: int = DEFAULT_RESOLUTION) -> np.ndarray:
    """Occupancy grid bool [res, res, res] indexed [x, y, z]."""
    grid = np.zeros((resolution,) * 3, dtype=bool)
    idx = np.asarray(indices, np.int64)
    grid[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    return grid


def voxel_iou(a: np.ndarray, b: np.ndarray, resolution: int) -> float:
    """Intersection over union of two voxel sets ([N, 3] index arrays); 1.0 for two empty sets."""
    la, lb = np.unique(linear_index(a, resolution)), np.unique(linear_index(b, resolution))
    union = len(np.union1d(la, lb))
    return 1.0 if union == 0 else len(np.intersect1d(la, lb, assume_unique=True)) / union


def index_dtype(resolution: int) -> np.dtype:
    return np.dtype(np.uint8) if resolution <= 256 else np.dtype(np.uint16)


def save_voxels(path: str | Path, indices: np.ndarray, resolution: int) -> None:
    """``.npz`` with ``indices`` [N, 3] (uint8 when res <= 256) and ``resolution``."""
    np.savez_compressed(path, indices=np.asarray(indices).astype(index_dtype(resolution)),
                        resolution=np.int64(resolution))


def load_voxels(path: str | Path) -> tuple[np.ndarray, int]:
    """(int64 [N, 3] indices, resolution) from :func:`save_voxels` output."""
    with np.load(path) as z:
        return z["indices"].astype(np.int64), int(z["resolution"])


_CUBE_CORNERS = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float64)
_CUBE_TRIANGLES = np.array([  # corner index = 4x + 2y + z; two triangles per face
    [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
    [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]], np.int64)


def voxels_to_mesh(indices: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Closed cube mesh of the voxels (for silhouettes / debugging): vertices [8N, 3], faces [12N, 3]."""
    idx = np.asarray(indices, np.float64).reshape(-1, 3)
    verts = ((idx[:, None, :] + _CUBE_CORNERS[None]) / resolution - 0.5).reshape(-1, 3)
    faces = (_CUBE_TRIANGLES[None] + 8 * np.arange(len(idx))[:, None, None]).reshape(-1, 3)
    return verts, faces

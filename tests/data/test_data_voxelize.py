"""Surface voxelisation: exact triangle/box overlap on the TRELLIS grid."""
from __future__ import annotations

import numpy as np
import pytest

from ss4d.data.voxelize import (dense_grid, linear_index, load_voxels, save_voxels, triangle_box_overlap,
                                voxel_centers, voxel_iou, voxelize_surface, voxels_to_mesh)

RES = 64


def sample_triangles(tri: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Uniform points on triangles [F, 3, 3] -> [F * n, 3]."""
    rng = np.random.default_rng(seed)
    r1, r2 = rng.random((2, len(tri), n))
    s = np.sqrt(r1)
    w = np.stack([1 - s, s * (1 - r2), s * r2], -1)
    return np.einsum("fnk,fkc->fnc", w, tri).reshape(-1, 3)


def test_unit_cube_surface_is_the_outer_voxel_shell():
    v, f = voxels_to_mesh(np.array([[0, 0, 0]]), 1)  # the cube [-0.5, 0.5]^3 itself
    idx = voxelize_surface(v, f, RES)
    shell = RES ** 3 - (RES - 2) ** 3
    assert len(idx) == shell
    assert ((idx == 0) | (idx == RES - 1)).any(1).all()


def test_contains_every_sampled_surface_point_and_little_else():
    rng = np.random.default_rng(1)
    verts = rng.uniform(-0.45, 0.45, (60, 3))
    faces = rng.integers(0, 60, (40, 3))
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    idx = voxelize_surface(verts, faces, RES)
    pts = sample_triangles(verts[faces], 4000)
    sampled = np.unique(np.floor((pts + 0.5) * RES).astype(np.int64), axis=0)
    got = set(map(tuple, idx))
    assert set(map(tuple, sampled)) <= got
    # every voxel found is within half a voxel diagonal of the surface (centre-to-triangle distance)
    from scipy.spatial import cKDTree

    dense = sample_triangles(verts[faces], 30000, seed=5)  # ~0.15 voxel spacing on these triangles
    d, _ = cKDTree(dense).query(voxel_centers(idx, RES).astype(np.float64))
    assert d.max() <= (np.sqrt(3) / 2 + 0.25) / RES  # half a voxel diagonal + sampling slack


def test_sorted_unique_in_range():
    rng = np.random.default_rng(2)
    verts = rng.uniform(-0.7, 0.7, (30, 3))  # partly outside the cube: clipped away
    faces = np.array([[i, i + 1, i + 2] for i in range(0, 27, 3)])
    idx = voxelize_surface(verts, faces, 32)
    assert idx.min() >= 0 and idx.max() < 32
    lin = linear_index(idx, 32)
    assert (np.diff(lin) > 0).all()


def test_triangle_box_overlap_cases():
    def hit(*p):
        return bool(triangle_box_overlap(np.array([p], np.float64))[0])

    assert hit([-1, -1, 0], [1, -1, 0], [0, 1, 0])  # slices through the box centre
    assert not hit([2, 2, 2], [3, 2, 2], [2, 3, 2])  # far away
    assert hit([0.5, 0.5, 0.5], [2, 0.5, 0.5], [0.5, 2, 0.5])  # touches a corner (closed box)
    assert hit([5, -5, 0], [-5, 5, 0], [5, 5, 0])  # huge triangle, no vertex near the box
    # the plane x + y + z = c crosses the box iff |c| <= 1.5, although the bboxes overlap either way
    assert not hit([1.6, 0, 0], [0, 1.6, 0], [0, 0, 1.6])
    assert hit([1.4, 0, 0], [0, 1.4, 0], [0, 0, 1.4])
    # an edge axis separates: a sliver passing beside a box edge
    assert not hit([0.6, 0.6, -2], [0.6, 0.6, 2], [2, 2, 0])
    # random triangles agree with dense point sampling (sampling can only under-report)
    rng = np.random.default_rng(3)
    tris = rng.uniform(-1.5, 1.5, (2000, 3, 3))
    exact = triangle_box_overlap(tris)
    pts = sample_triangles(tris, 300).reshape(len(tris), 300, 3)
    sampled = (np.abs(pts) <= 0.5).all(-1).any(-1)
    assert not (sampled & ~exact).any()
    assert exact.sum() >= sampled.sum() > 50


def test_helpers_roundtrip(tmp_path):
    a = np.array([[0, 0, 0], [1, 2, 3], [63, 63, 63]])
    b = np.array([[1, 2, 3], [5, 5, 5]])
    assert voxel_iou(a, b, RES) == pytest.approx(1 / 4)
    assert voxel_iou(a, a, RES) == 1.0
    g = dense_grid(a, RES)
    assert g.sum() == 3 and g[1, 2, 3]
    np.testing.assert_allclose(voxel_centers(a[:1], RES), [[-0.5 + 0.5 / RES] * 3])
    save_voxels(tmp_path / "v.npz", a, RES)
    back, res = load_voxels(tmp_path / "v.npz")
    assert res == RES
    np.testing.assert_array_equal(back, a)
    with np.load(tmp_path / "v.npz") as z:
        assert z["indices"].dtype == np.uint8

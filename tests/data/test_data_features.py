"""Feature aggregation: projection + bilinear sampling, and the visibility (depth) test."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ss4d.data.cameras import BlenderCamera, look_at_blender, orbit_views
from ss4d.data.features import aggregate_features, project_to_views, visibility
from ss4d.data.mesh import Material
from ss4d.data.rasterize import MeshRenderer
from ss4d.data.voxelize import voxel_centers, voxelize_surface, voxels_to_mesh

RES = 32
GRID = 37


def coordinate_maps(n_views: int) -> torch.Tensor:
    """Feature maps [V, 2, 37, 37] whose channels are the patch centres' normalised x and y."""
    c = (2 * torch.arange(GRID, dtype=torch.float64) + 1) / GRID - 1  # align_corners=False centres
    x = c.view(1, GRID).expand(GRID, GRID)
    y = c.view(GRID, 1).expand(GRID, GRID)
    return torch.stack([x, y]).unsqueeze(0).expand(n_views, 2, GRID, GRID).contiguous()


def scene():
    """A thin plate at z = -0.3 and a small box in front of it (towards +z)."""
    plate_v = np.array([[-0.45, -0.45, -0.3], [0.45, -0.45, -0.3], [0.45, 0.45, -0.3], [-0.45, 0.45, -0.3]])
    plate_f = np.array([[0, 1, 2], [0, 2, 3]])
    box_v, box_f = voxels_to_mesh(np.array([[0, 0, 0]]), 1)
    box_v = box_v * 0.3 + [0, 0, 0.1]
    verts = np.concatenate([plate_v, box_v])
    faces = np.concatenate([plate_f, box_f + 4])
    return verts, faces


def render_depths(verts, faces, cams):
    r = MeshRenderer(faces, [Material()])
    return np.stack([r.render(verts, c)[1] for c in cams])


def test_bilinear_sampling_matches_projection():
    cams = orbit_views(3, 96, seed=2)
    idx = np.array([[16, 16, 16], [10, 20, 12], [20, 11, 18]])
    vf = aggregate_features(idx, RES, coordinate_maps(3), cams, aggregation="mean")
    xy, _ = project_to_views(voxel_centers(idx, RES).astype(np.float64), cams)
    ndc = xy / 96 * 2 - 1  # [V, N, 2]
    np.testing.assert_allclose(vf.feats, ndc.mean(0), atol=1e-5)
    assert (vf.num_views == 3).all()


def test_visible_drops_voxels_hidden_in_every_view():
    verts, faces = scene()
    cam = BlenderCamera(look_at_blender(np.array([0.0, 0.0, 2.0]), up=np.array([0.0, 1.0, 0.0])), math.radians(40), 128, 128)
    depth = render_depths(verts, faces, [cam])
    idx = voxelize_surface(verts, faces, RES)
    maps = coordinate_maps(1)
    vis = aggregate_features(idx, RES, maps, [cam], depth, "visible")
    mean = aggregate_features(idx, RES, maps, [cam], depth, "mean")
    assert len(mean.indices) == len(idx)  # every voxel projects into the image
    assert 0 < len(vis.indices) < len(mean.indices)
    c = voxel_centers(idx, RES)
    # plate voxels straight behind the box (|x|, |y| < 0.1) are hidden; plate voxels at the rim are seen
    plate = np.abs(c[:, 2] + 0.3) < 1.0 / RES
    behind = plate & (np.abs(c[:, 0]) < 0.1) & (np.abs(c[:, 1]) < 0.1)
    rim = plate & (np.abs(c[:, 0]) > 0.3)
    assert behind.any() and rim.any()
    assert not vis.kept[behind].any()
    assert vis.kept[rim].all()
    # the box's back face (z = -0.05) is hidden by its front face
    back = (np.abs(c[:, 2] + 0.05) < 0.5 / RES) & (np.abs(c[:, 0]) < 0.1) & (np.abs(c[:, 1]) < 0.1)
    assert back.any() and not vis.kept[back].any()
    # the box's front face (z = 0.25) is kept
    front = (np.abs(c[:, 2] - 0.25) <= 1.0 / RES) & (np.abs(c[:, 0]) < 0.1) & (np.abs(c[:, 1]) < 0.1)
    assert front.any() and vis.kept[front].all()
    np.testing.assert_allclose(vis.feats, mean.feats[vis.kept[mean.kept]], atol=1e-6)


def test_more_views_see_more_and_every_kept_voxel_is_seen():
    verts, faces = scene()
    cams = orbit_views(12, 96, seed=0)
    depth = render_depths(verts, faces, cams)
    idx = voxelize_surface(verts, faces, RES)
    vis = aggregate_features(idx, RES, coordinate_maps(len(cams)), cams, depth, "visible")
    tol = math.sqrt(3) / RES
    seen = visibility(voxel_centers(vis.indices, RES).astype(np.float64), cams, depth, tol)
    assert seen.any(0).all()
    np.testing.assert_array_equal(seen.sum(0), vis.num_views)
    few = aggregate_features(idx, RES, coordinate_maps(2), cams[:2], depth[:2], "visible")
    assert len(few.indices) <= len(vis.indices)


def test_errors():
    cams = orbit_views(2, 32)
    with pytest.raises(ValueError, match="needs rendered depth"):
        aggregate_features(np.zeros((1, 3), int), RES, coordinate_maps(2), cams, None, "visible")
    with pytest.raises(ValueError, match="aggregation"):
        aggregate_features(np.zeros((1, 3), int), RES, coordinate_maps(2), cams, None, "max")
    with pytest.raises(ValueError, match="cameras"):
        aggregate_features(np.zeros((1, 3), int), RES, coordinate_maps(3), cams, None, "mean")

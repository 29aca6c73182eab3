"""Cameras (Hammersley views, conventions, transforms.json) and the PyTorch rasteriser."""
from __future__ import annotations

import math

import numpy as np
import torch

from ss4d.data.cameras import (BlenderCamera, blender_to_opencv, conditioning_camera, hammersley_sphere,
                               look_at_blender, orbit_views, radical_inverse_base2, read_transforms, write_transforms)
from ss4d.data.mesh import Material
from ss4d.data.rasterize import MeshRenderer, rasterize, sample_texture


def test_radical_inverse_and_hammersley():
    np.testing.assert_allclose(radical_inverse_base2(np.arange(5)), [0, 0.5, 0.25, 0.75, 0.125])
    yaw, pitch = hammersley_sphere(400)
    assert yaw.shape == pitch.shape == (400,)
    assert 0.72 < (pitch > 0).mean() < 0.78  # 75% of the views above the horizon
    assert np.all(np.abs(pitch) <= math.pi / 2) and np.all((yaw >= 0) & (yaw < 2 * math.pi))
    assert len(np.unique(np.round(yaw, 6))) == 400


def test_look_at_and_conventions():
    for cam in orbit_views(20, 64, seed=1) + [conditioning_camera("front", 64), conditioning_camera("random", 64)]:
        c2w = cam.c2w_blender
        np.testing.assert_allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(np.linalg.norm(c2w[:3, 3]), 2.0)
        # Blender camera looks along its -Z towards the origin; +Y has a non-negative world-up part
        np.testing.assert_allclose(-c2w[:3, 2], -c2w[:3, 3] / 2.0, atol=1e-12)
        assert c2w[2, 1] >= -1e-12
        xy, z = cam.project(np.zeros((1, 3)))  # OpenCV projection of the origin: image centre
        np.testing.assert_allclose(xy[0], [32, 32], atol=1e-9)
        np.testing.assert_allclose(z, [2.0])
        # world up projects upwards in the image (smaller row)
        xy_up, _ = cam.project(np.array([[0, 0, 0.1]]))
        assert xy_up[0, 1] <= 32 + 1e-9
    front = conditioning_camera("front", 64).position
    assert front[1] < 0 and abs(front[0]) < 1e-9  # glTF front (+Z) is world -Y


def test_blender_opencv_roundtrip():
    c2w = look_at_blender(np.array([1.0, -2.0, 0.5]))
    cv = blender_to_opencv(c2w)
    np.testing.assert_allclose(blender_to_opencv(cv), c2w)
    np.testing.assert_allclose(cv[:3, 2], -c2w[:3, 2])


def test_transforms_roundtrip(tmp_path):
    cams = orbit_views(3, 32, seed=0)
    write_transforms(tmp_path / "transforms.json", cams, ["a.png", "b.png", "c.png"], extra={"time": 0.5})
    back, files, data = read_transforms(tmp_path / "transforms.json")
    assert files == ["a.png", "b.png", "c.png"] and data["time"] == 0.5
    for a, b in zip(cams, back):
        np.testing.assert_allclose(a.c2w_blender, b.c2w_blender)
        assert a.fov_x == b.fov_x and (b.width, b.height) == (32, 32)


def square(z_world: float, half: float):
    v = np.array([[-half, -half, z_world], [half, -half, z_world], [half, half, z_world], [-half, half, z_world]])
    return v, np.array([[0, 1, 2], [0, 2, 3]])


def test_rasterizer_coverage_and_planar_depth():
    cam = BlenderCamera(look_at_blender(np.array([0.0, 0.0, 2.0]), up=np.array([0.0, 1.0, 0.0])), math.radians(40), 64, 64)
    v, f = square(0.25, 0.3)
    w2c = cam.w2c_opencv
    frag = rasterize(torch.as_tensor(v @ w2c[:3, :3].T + w2c[:3, 3]), torch.as_tensor(f),
                     torch.as_tensor(cam.intrinsics()), 64, 64)
    covered = (frag.face >= 0).numpy()
    fpx = cam.intrinsics()[0, 0]
    side_px = 2 * 0.3 * fpx / 1.75  # square of side 0.6 at depth 1.75
    assert abs(covered.sum() - side_px ** 2) < 4 * side_px  # area up to edge pixels
    d = frag.depth.numpy()
    np.testing.assert_allclose(d[covered], 1.75, atol=1e-9)  # planar depth, not ray length
    assert np.isinf(d[~covered]).all()
    b = frag.bary.numpy()[covered]
    np.testing.assert_allclose(b.sum(1), 1.0, atol=1e-9)


def test_rasterizer_z_test_and_renderer_colours():
    cam = BlenderCamera(look_at_blender(np.array([0.0, 0.0, 2.0]), up=np.array([0.0, 1.0, 0.0])), math.radians(40), 48, 48)
    near, fn = square(0.2, 0.15)
    far, ff = square(-0.2, 0.4)
    verts = np.concatenate([near, far])
    faces = np.concatenate([fn, ff + 4])
    mats = [Material("red", np.array([1, 0, 0, 1], np.float32)), Material("blue", np.array([0, 0, 1, 1], np.float32))]
    r = MeshRenderer(faces, mats, face_material=np.array([0, 0, 1, 1]))
    rgba, depth = r.render(verts, cam)
    c = rgba[24, 24]
    assert c[3] == 255 and c[0] > 100 and c[2] == 0  # the nearer red square wins the z-test
    np.testing.assert_allclose(depth[24, 24], 1.8, atol=1e-5)
    edge = rgba[24, 14]  # far square spans columns ~12..36, the near one ~18..30
    assert edge[3] == 255 and edge[2] > 100 and edge[0] == 0  # blue square visible around it
    assert rgba[0, 0, 3] == 0 and np.isinf(depth[0, 0])  # corner: background


def test_texture_sampling_gltf_uv_origin():
    tex = torch.zeros(2, 2, 3, dtype=torch.float64)
    tex[0, 0] = torch.tensor([1.0, 0, 0])  # top-left texel
    tex[1, 1] = torch.tensor([0, 0, 1.0])  # bottom-right texel
    uv = torch.tensor([[0.25, 0.25], [0.75, 0.75], [1.25, 0.25]], dtype=torch.float64)
    out = sample_texture(tex, uv)
    np.testing.assert_allclose(out[0].numpy(), [1, 0, 0])
    np.testing.assert_allclose(out[1].numpy(), [0, 0, 1])
    np.testing.assert_allclose(out[2].numpy(), [1, 0, 0])  # repeat wrap
    np.testing.assert_allclose(sample_texture(tex, uv[2:], "clamp").numpy(), [[0, 0, 0]])


def test_dataset_camera_converts_to_the_renderer_camera():
    """One rendering camera: a stored (Blender c2w, fov) camera projects points to the same pixels and
    depths through the renderer's Camera as through its own OpenCV projection, non-square images too."""
    import torch

    from trellis_ext.renderers import project_points

    rng = np.random.default_rng(0)
    points = rng.uniform(-0.5, 0.5, size=(64, 3))
    for cam in orbit_views(6, 96, seed=3) + [conditioning_camera("front", 64).resized(80, 48)]:
        xy_ref, z_ref = cam.project(points)
        uv, z = project_points(torch.as_tensor(points, dtype=torch.float32), cam.to_camera())
        np.testing.assert_allclose(uv.numpy(), xy_ref, atol=2e-3)
        np.testing.assert_allclose(z.numpy(), z_ref, atol=1e-5)
        np.testing.assert_allclose(cam.to_camera().center.numpy(), cam.position, atol=1e-5)

"""Cameras and the Gaussian rasteriser (PyTorch reference; gsplat compared when CUDA is present)."""
import math

import pytest
import torch

from trellis_ext.representations import SH_C0, Gaussian
from trellis_ext.renderers.rasterize_torch import ALPHA_MAX, ALPHA_MIN, TRANSMITTANCE_MIN
from trellis_ext.renderers import (
    Camera,
    gsplat_available,
    intrinsics_from_fov,
    look_at_extrinsics,
    orbit_camera,
    orbit_trajectory,
    project_gaussians,
    project_points,
    rasterize_brute_force,
    rasterize_gaussians,
    rasterize_tiles,
    render_gaussians,
    resolve_backend,
)

KERNEL = 0.1   # TRELLIS's mip 2D filter (pixels^2)


def focal_px(fov_deg, size):
    return 0.5 / math.tan(math.radians(fov_deg) / 2) * size


def random_scene(n, seed=0, spread=0.8, scale=(0.005, 0.06), opacity=(0.05, 1.0), dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=gen) - 0.5) * spread
    quats = torch.randn(n, 4, generator=gen)
    scales = scale[0] + (scale[1] - scale[0]) * torch.rand(n, 3, generator=gen)
    opac = opacity[0] + (opacity[1] - opacity[0]) * torch.rand(n, generator=gen)
    colors = torch.rand(n, 3, generator=gen)
    return [t.to(dtype) for t in (means, quats, scales, opac, colors)]


def single_gaussian(center, scale, opacity, rgb) -> Gaussian:
    """A one-element Gaussian with the given *activated* values (isotropic)."""
    g = Gaussian()
    g.from_xyz(torch.tensor([center], dtype=torch.float32))
    g.from_scaling(torch.full((1, 3), float(scale)))
    g.from_rotation(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    g.from_opacity(torch.tensor([[float(opacity)]]))
    g.from_features(((torch.tensor(rgb, dtype=torch.float32) - 0.5) / SH_C0).reshape(1, 1, 3))
    return g


# ---------------------------------------------------------------- cameras

def test_orbit_camera_follows_trellis_conventions():
    cam = orbit_camera(yaw=0.0, pitch=0.0, radius=2.0, fov_deg=40.0, resolution=64)
    torch.testing.assert_close(cam.center, torch.tensor([0.0, 2.0, 0.0]), atol=1e-6, rtol=0)
    rot = cam.extrinsics[:3, :3]
    torch.testing.assert_close(rot @ rot.T, torch.eye(3), atol=1e-6, rtol=0)
    assert float(torch.det(rot)) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(rot[2], torch.tensor([0.0, -1.0, 0.0]))   # looks at the origin
    torch.testing.assert_close(rot[1], torch.tensor([0.0, 0.0, -1.0]))   # image down = world -Z
    f = 0.5 / math.tan(math.radians(20))
    torch.testing.assert_close(cam.intrinsics, torch.tensor([[f, 0, 0.5], [0, f, 0.5], [0, 0, 1.0]]))
    assert cam.fov_x_deg == pytest.approx(40.0)
    side = orbit_camera(yaw=math.pi / 2, pitch=0.3, radius=1.5)
    expected = 1.5 * torch.tensor([math.cos(0.3), 0.0, math.sin(0.3)])
    torch.testing.assert_close(side.center, expected, atol=1e-5, rtol=0)
    assert side.width == side.height == 512


def test_orbit_trajectory_matches_render_video():
    cams = orbit_trajectory(8, resolution=32)
    assert len(cams) == 8
    for k, cam in enumerate(cams):
        yaw = 2 * math.pi * k / 8
        pitch = 0.25 + 0.5 * math.sin(yaw)
        eye = 2 * torch.tensor([math.sin(yaw) * math.cos(pitch), math.cos(yaw) * math.cos(pitch), math.sin(pitch)])
        torch.testing.assert_close(cam.center, eye, atol=1e-5, rtol=0)
    exact = orbit_trajectory(5, resolution=32, match_trellis=True)
    yaw_last = 2 * 3.1415
    pitch_last = 0.25 + 0.5 * math.sin(yaw_last)
    assert float(exact[-1].center[2]) == pytest.approx(2 * math.sin(pitch_last), abs=1e-5)


def test_projection_of_known_points():
    res = 64
    cam = orbit_camera(0.0, 0.0, radius=2.0, fov_deg=40.0, resolution=res)
    f = focal_px(40.0, res)
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 0.1], [0.0, -0.5, 0.2]])
    uv, depth = project_points(pts, cam)
    expected = torch.tensor([
        [32.0, 32.0],                        # principal point = image centre
        [32.0 - f * 0.1 / 2, 32.0],          # world +X appears on the left
        [32.0, 32.0 - f * 0.1 / 2],          # world +Z appears up
        [32.0, 32.0 - f * 0.2 / 2.5],        # farther point: depth 2.5
    ])
    torch.testing.assert_close(uv, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(depth, torch.tensor([2.0, 2.0, 2.0, 2.5]), atol=1e-6, rtol=0)
    # a non-square image with an off-centre principal point
    intr = torch.tensor([[1.2, 0.0, 0.4], [0.0, 0.9, 0.6], [0.0, 0.0, 1.0]])
    cam2 = Camera(look_at_extrinsics([0.0, 0.0, -3.0], up=(0.0, -1.0, 0.0)), intr, 40, 30)
    uv2, _ = project_points(torch.tensor([[0.3, 0.6, 0.0]]), cam2)
    torch.testing.assert_close(uv2, torch.tensor([[1.2 * 40 * 0.1 + 16, 0.9 * 30 * 0.2 + 18]]), atol=1e-4, rtol=0)


def test_intrinsics_from_fov_units_are_degrees():
    k = intrinsics_from_fov(90.0, 60.0)
    assert float(k[0, 0]) == pytest.approx(0.5)
    assert float(k[1, 1]) == pytest.approx(0.5 / math.tan(math.radians(30)))


# ---------------------------------------------------------------- rasteriser: closed form

def test_single_gaussian_matches_closed_form():
    res, radius, scale, opacity = 63, 2.0, 0.02, 0.8   # odd size: pixel 31 is centred on the axis
    rgb, bg = (0.9, 0.3, 0.1), (0.0, 0.2, 1.0)
    cam = orbit_camera(yaw=0.7, pitch=0.3, radius=radius, resolution=res)
    out = render_gaussians(single_gaussian((0.0, 0.0, 0.0), scale, opacity, rgb), cam, bg_color=bg,
                           backend="torch")
    assert out.rgb.shape == (3, res, res) and out.alpha.shape == out.depth.shape == (1, res, res)
    assert out.backend == "torch"
    sigma2 = (focal_px(40.0, res) * scale / radius) ** 2          # projected variance, pixels^2
    filtered = sigma2 + KERNEL
    peak = opacity * sigma2 / filtered                              # mip-filter opacity factor
    c = res // 2
    assert divmod(int(out.alpha[0].argmax()), res) == (c, c)
    assert float(out.alpha[0, c, c]) == pytest.approx(peak, rel=1e-4)
    for d in (1, 2, 3, 4):
        expected = peak * math.exp(-0.5 * d * d / filtered)
        expected = expected if expected >= ALPHA_MIN else 0.0       # below 1/255: skipped
        assert float(out.alpha[0, c, c + d]) == pytest.approx(expected, rel=1e-3, abs=1e-9)
        assert float(out.alpha[0, c - d, c]) == pytest.approx(expected, rel=1e-3, abs=1e-9)
    assert float(out.alpha[0, c, c + 4]) == 0.0
    expected_rgb = [peak * x + (1 - peak) * b for x, b in zip(rgb, bg)]
    torch.testing.assert_close(out.rgb[:, c, c], torch.tensor(expected_rgb), atol=1e-5, rtol=1e-4)
    assert float(out.depth[0, c, c]) == pytest.approx(radius, rel=1e-5)
    torch.testing.assert_close(out.rgb[:, 0, 0], torch.tensor(bg))   # far corner = background


def test_rendered_blob_lands_on_projected_pixel():
    cam = orbit_camera(0.4, 0.2, resolution=(80, 60))
    point = (0.15, -0.1, 0.12)
    uv, _ = project_points(torch.tensor([point]), cam)
    out = render_gaussians(single_gaussian(point, 0.01, 0.9, (1.0, 1.0, 1.0)), cam, backend="torch")
    row, col = divmod(int(out.alpha[0].argmax()), 80)
    assert (col, row) == (int(uv[0, 0]), int(uv[0, 1]))


def test_depth_ordering_and_background():
    cam = orbit_camera(0.0, 0.0, radius=2.0, resolution=33)       # looks along -Y; pixel 16 on axis
    means = torch.tensor([[0.0, 0.3, 0.0], [0.0, -0.3, 0.0]])      # front (z = 1.7), back (z = 2.3)
    quats = torch.tensor([[1.0, 0, 0, 0]] * 2)
    scales = torch.full((2, 3), 0.2)
    opac = torch.tensor([1.0, 0.5])
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    bg = (0.2, 0.2, 0.9)
    a = rasterize_gaussians(means, quats, scales, opac, colors, cam, bg_color=bg, backend="torch")
    b = rasterize_gaussians(means.flip(0), quats, scales, opac.flip(0), colors.flip(0), cam, bg_color=bg,
                            backend="torch")
    torch.testing.assert_close(a.rgb, b.rgb)                       # order of inputs is irrelevant
    # on the axis: front alpha clamped at 0.99, back alpha = 0.5 * its mip factor
    back = float(project_gaussians(means, quats, scales, opac, cam, KERNEL).opacities[1])
    t_final = (1 - ALPHA_MAX) * (1 - back)
    expected = torch.tensor([ALPHA_MAX + t_final * bg[0], (1 - ALPHA_MAX) * back + t_final * bg[1], t_final * bg[2]])
    torch.testing.assert_close(a.rgb[:, 16, 16], expected, atol=1e-6, rtol=1e-5)
    assert float(a.alpha[0, 16, 16]) == pytest.approx(1 - t_final, abs=1e-6)
    expected_depth = (ALPHA_MAX * 1.7 + (1 - ALPHA_MAX) * back * 2.3) / (1 - t_final)
    assert float(a.depth[0, 16, 16]) == pytest.approx(expected_depth, rel=1e-5)
    empty = rasterize_gaussians(means[:0], quats[:0], scales[:0], opac[:0], colors[:0], cam, bg_color=bg,
                                backend="torch")
    torch.testing.assert_close(empty.rgb, torch.tensor(bg)[:, None, None].expand(3, 33, 33))
    assert float(empty.alpha.abs().max()) == 0.0
    behind = rasterize_gaussians(torch.tensor([[0.0, 2.5, 0.0]]), quats[:1], scales[:1], opac[:1], colors[:1],
                                 cam, bg_color=bg, backend="torch")      # behind the camera: culled
    assert float(behind.alpha.max()) == 0.0


# ---------------------------------------------------------------- rasteriser: tiles == oracle

@pytest.mark.parametrize("case", [
    dict(n=150, size=(70, 50), tile=16, chunk=1 << 22, step=64, seed=0),
    dict(n=300, size=(45, 61), tile=8, chunk=5000, step=4, seed=1),       # many batches and steps
    dict(n=200, size=(33, 33), tile=16, chunk=1 << 22, step=3, seed=2, opacity=(0.9, 1.0)),
])
def test_tiles_equal_brute_force(case):
    means, quats, scales, opac, colors = random_scene(case["n"], seed=case["seed"],
                                                      opacity=case.get("opacity", (0.05, 1.0)))
    means[:5] += torch.tensor([0.0, 0.0, 1.5])                      # some partly / fully off-screen
    width, height = case["size"]
    cam = orbit_camera(0.3, 0.2, radius=2.0, resolution=(width, height))
    proj = project_gaussians(means, quats, scales, opac, cam, KERNEL)
    bg = torch.tensor([0.1, 0.5, 0.3])
    tiled = rasterize_tiles(proj, colors, width, height, bg, tile_size=case["tile"],
                            chunk_elements=case["chunk"], gaussians_per_step=case["step"])
    oracle = rasterize_brute_force(proj, colors, width, height, bg)
    for name, t, o in zip(("rgb", "alpha", "depth"), tiled, oracle):
        torch.testing.assert_close(t, o, atol=2e-5, rtol=1e-5, msg=name)
    if case.get("opacity"):
        assert float(oracle[1].max()) > 0.999                       # early stop is exercised


def test_early_stop_matches_sequential_definition():
    """Opaque stack: the Gaussian that would push T below 1e-4 is not drawn, nor anything behind."""
    cam = orbit_camera(0.0, 0.0, radius=2.0, resolution=17)       # pixel 8 on the optical axis
    n = 6
    means = torch.stack([torch.zeros(n), torch.linspace(0.3, -0.3, n), torch.zeros(n)], dim=1)
    quats, scales = torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4), torch.full((n, 3), 0.3)
    opac = torch.tensor([0.99, 0.9, 0.99, 0.99, 0.99, 0.99])
    colors = torch.eye(3).repeat(2, 1)
    out = rasterize_gaussians(means, quats, scales, opac, colors, cam, backend="torch")
    proj = project_gaussians(means, quats, scales, opac, cam, KERNEL)
    # on the axis every exponent is 0, so alpha_i = min(0.99, opacity_i * mip factor_i)
    t, expected, drawn = 1.0, torch.zeros(3), 0
    for i in torch.argsort(proj.depths).tolist():
        a = min(ALPHA_MAX, float(proj.opacities[i]))
        if t * (1 - a) < TRANSMITTANCE_MIN:
            break
        expected += colors[i] * a * t
        t *= 1 - a
        drawn += 1
    assert drawn == 2                                              # third one would reach T < 1e-4
    torch.testing.assert_close(out.rgb[:, 8, 8], expected, atol=1e-6, rtol=1e-5)
    assert float(out.alpha[0, 8, 8]) == pytest.approx(1 - t, abs=1e-6)


# ---------------------------------------------------------------- gradients

def test_gradients_flow_to_gaussian_parameters():
    means, quats, scales, opac, colors = random_scene(40, seed=3, opacity=(0.2, 0.9))
    leaves = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]
    cam = orbit_camera(0.2, 0.3, resolution=40)
    out = rasterize_gaussians(*leaves, cam, bg_color=(0.3, 0.3, 0.3), backend="torch")
    target = torch.rand_like(out.rgb)
    ((out.rgb - target) ** 2).mean().add(out.depth.mean() * 1e-2).backward()
    for name, leaf in zip(("means", "quats", "scales", "opacities", "colors"), leaves):
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all(), name
        assert float(leaf.grad.abs().sum()) > 0, name


def test_gradients_reach_raw_gaussian_attributes():
    g = single_gaussian((0.02, 0.0, 0.01), 0.03, 0.6, (0.2, 0.7, 0.4))
    for name in ("_xyz", "_features_dc", "_scaling", "_rotation", "_opacity"):
        getattr(g, name).requires_grad_(True)
    g._rotation.data += torch.tensor([[0.0, 0.1, -0.2, 0.05]])       # anisotropy needs a rotation
    g._scaling.data += torch.tensor([[0.0, 0.5, -0.5]])
    out = render_gaussians(g, orbit_camera(0.1, 0.2, resolution=24), backend="torch")
    (out.rgb * torch.linspace(0, 1, 24)).sum().backward()
    for name in ("_xyz", "_features_dc", "_scaling", "_rotation", "_opacity"):
        grad = getattr(g, name).grad
        assert grad is not None and torch.isfinite(grad).all() and float(grad.abs().sum()) > 0, name


def test_gradcheck_float64():
    means, quats, scales, opac, colors = random_scene(4, seed=5, spread=0.3, scale=(0.05, 0.1),
                                                      opacity=(0.3, 0.7), dtype=torch.float64)
    cam = orbit_camera(0.3, 0.1, resolution=(12, 10)).to(dtype=torch.float64)
    weights = torch.rand(3, 10, 12, dtype=torch.float64)

    def fn(m, s, o, c):
        out = rasterize_gaussians(m, quats, s, o, c, cam, bg_color=(0.1, 0.2, 0.3), backend="torch", tile_size=8)
        return (out.rgb * weights).sum() + out.alpha.sum()

    inputs = [t.clone().requires_grad_(True) for t in (means, scales, opac, colors)]
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- backends

def test_backend_selection(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("RASTERIZER_BACKEND", raising=False)
    assert resolve_backend("auto", cpu) == "torch"
    monkeypatch.setenv("RASTERIZER_BACKEND", "torch")
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    monkeypatch.setenv("RASTERIZER_BACKEND", "bogus")
    with pytest.raises(ValueError, match="bogus"):
        resolve_backend("auto", cpu)
    with pytest.raises((RuntimeError, ImportError)):
        resolve_backend("gsplat", cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat comparison needs a CUDA device")
@pytest.mark.skipif(not gsplat_available(), reason="gsplat is not installed (CUDA-only extra)")
def test_gsplat_matches_torch_reference():
    means, quats, scales, opac, colors = random_scene(2000, seed=7, opacity=(0.05, 0.95))
    cam = orbit_camera(0.5, 0.25, resolution=128)
    ref = rasterize_gaussians(means, quats, scales, opac, colors, cam, bg_color=(0.2, 0.2, 0.2), backend="torch")
    cuda = [t.cuda() for t in (means, quats, scales, opac, colors)]
    out = rasterize_gaussians(*cuda, cam, bg_color=(0.2, 0.2, 0.2), backend="gsplat")
    assert out.backend == "gsplat"
    # gsplat clamps alpha at 0.999 (we at 0.99) and bins with its own radii: close, not equal
    diff = (out.rgb.cpu() - ref.rgb).abs()
    assert float(diff.mean()) < 2e-3 and float(diff.max()) < 5e-2
    assert float((out.alpha.cpu() - ref.alpha).abs().mean()) < 2e-3

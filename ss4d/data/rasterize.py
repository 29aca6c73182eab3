"""Pure-PyTorch z-buffer triangle rasteriser and a simple mesh renderer (CPU or CUDA).

This is the fallback renderer (``--renderer torch``) used when the Blender environment is absent
and in fast tests. It draws exactly the same cameras as the Blender renderer
(:mod:`ss4d.data.cameras`) and produces RGBA + planar depth; shading is plain Lambert with fixed
lights (not a path tracer), so its images differ from Cycles in appearance but not in geometry.

Conventions: OpenCV camera (x right, y down, looks along +z), pixel (i, j) centre at
``(j + 0.5, i + 0.5)``; depth is the camera-space ``z`` (distance to the image plane) and
``inf`` where nothing is drawn. Both triangle sides are drawn (no culling).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from .cameras import BlenderCamera
from .mesh import Material

NEAR_PLANE = 1e-4  # triangles with a vertex closer than this are dropped (no clipping)
MAX_CANDIDATES_PER_CHUNK = 1 << 22  # (triangle, pixel) pairs evaluated at once
DEPTH_QUANT_BITS = 24  # z-buffer key: quantised depth (high bits) | face index (low 32 bits)
FACE_BITS = 32
EDGE_EPS = 1e-9  # barycentric tolerance so shared edges leave no cracks
DEGENERATE_AREA = 1e-12
MAX_DEPTH_FOR_KEY = 2.0 ** (63 - FACE_BITS - DEPTH_QUANT_BITS)  # depths beyond this saturate
RASTER_CPU_THREADS = 1
AMBIENT = 0.35
# (direction towards the light in the Z-up world, intensity); loosely a key light from above-front
# and a weaker fill, like a studio setup
LIGHTS = (((4.0, 1.0, 6.0), 0.55), ((-3.0, -4.0, 2.0), 0.25), ((0.0, 0.0, -1.0), 0.1))
SRGB_THRESHOLD_LINEAR = 0.0031308
SRGB_THRESHOLD_ENCODED = 0.04045


@contextlib.contextmanager
def cpu_threads(n: int = 1):
    """Temporarily limit torch's intra-op CPU threads. The rasteriser issues many small ops for
    which thread hand-offs dominate: on a busy 2-core machine 2 threads ran ~50x slower than 1."""
    old = torch.get_num_threads()
    if n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != old:
            torch.set_num_threads(old)


@dataclass
class Fragments:
    """Per-pixel rasterisation result for one view.

    face: [H, W] int64 face index, -1 for background. bary: [H, W, 3] perspective-correct
    barycentrics (zeros on background). depth: [H, W] camera z, inf on background.
    """

    face: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= SRGB_THRESHOLD_ENCODED, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= SRGB_THRESHOLD_LINEAR, x * 12.92, 1.055 * x.clamp_min(1e-12) ** (1 / 2.4) - 0.055)


def rasterize(verts_cam: torch.Tensor, faces: torch.Tensor, intrinsics: torch.Tensor, height: int,
              width: int) -> Fragments:
    """Rasterise triangles given in OpenCV camera coordinates.

    Args:
        verts_cam: [V, 3] camera-space vertices (float32/64).
        faces: [F, 3] int64 vertex indices.
        intrinsics: [3, 3] pixel intrinsics.
        height, width: image size.
    """
    dev = verts_cam.device
    v = verts_cam.to(torch.float64)
    faces = faces.to(device=dev, dtype=torch.int64)
    k = intrinsics.to(device=dev, dtype=torch.float64)
    n_pix = height * width
    empty_key = torch.iinfo(torch.int64).max
    zbuf = torch.full((n_pix,), empty_key, dtype=torch.int64, device=dev)
    if len(faces) == 0:
        return _empty_fragments(height, width, dev)

    z = v[:, 2]
    safe_z = torch.where(z > NEAR_PLANE, z, torch.ones_like(z))
    sx = k[0, 0] * v[:, 0] / safe_z + k[0, 2]
    sy = k[1, 1] * v[:, 1] / safe_z + k[1, 2]
    tri_ok = (z[faces] > NEAR_PLANE).all(1)
    fx, fy = sx[faces], sy[faces]  # [F, 3]
    area = (fx[:, 1] - fx[:, 0]) * (fy[:, 2] - fy[:, 0]) - (fx[:, 2] - fx[:, 0]) * (fy[:, 1] - fy[:, 0])
    tri_ok &= area.abs() > DEGENERATE_AREA
    j0 = torch.ceil(fx.min(1).values - 0.5).clamp(0, width - 1)
    j1 = torch.floor(fx.max(1).values - 0.5).clamp(-1, width - 1)
    i0 = torch.ceil(fy.min(1).values - 0.5).clamp(0, height - 1)
    i1 = torch.floor(fy.max(1).values - 0.5).clamp(-1, height - 1)
    bw = (j1 - j0 + 1).clamp_min(0)
    bh = (i1 - i0 + 1).clamp_min(0)
    # also reject boxes entirely outside the image
    tri_ok &= (fx.max(1).values >= 0) & (fx.min(1).values <= width)
    tri_ok &= (fy.max(1).values >= 0) & (fy.min(1).values <= height)
    counts = torch.where(tri_ok, bw * bh, torch.zeros_like(bw)).to(torch.int64)
    face_ids = torch.nonzero(counts > 0).squeeze(1)
    if face_ids.numel() == 0:
        return _empty_fragments(height, width, dev)
    counts = counts[face_ids]
    cum = torch.cumsum(counts, 0)
    start = 0
    while start < len(face_ids):
        base = int(cum[start - 1]) if start > 0 else 0
        stop = int(torch.searchsorted(cum, torch.tensor(base + MAX_CANDIDATES_PER_CHUNK, device=dev), right=True))
        stop = max(stop, start + 1)
        ids = face_ids[start:stop]
        cnt = counts[start:stop]
        _raster_chunk(ids, cnt, fx, fy, z, faces, area, j0, i0, bw, width, zbuf)
        start = stop

    hit = zbuf != empty_key
    face = torch.full((n_pix,), -1, dtype=torch.int64, device=dev)
    face[hit] = zbuf[hit] & ((1 << FACE_BITS) - 1)
    pix = torch.nonzero(hit).squeeze(1)
    bary = torch.zeros((n_pix, 3), dtype=torch.float64, device=dev)
    depth = torch.full((n_pix,), math.inf, dtype=torch.float64, device=dev)
    if pix.numel():
        f = face[pix]
        px = (pix % width).to(torch.float64) + 0.5
        py = torch.div(pix, width, rounding_mode="floor").to(torch.float64) + 0.5
        w = _screen_bary(fx[f], fy[f], px, py, area[f])
        zf = z[faces[f]]
        inv = w / zf
        zz = 1.0 / inv.sum(1)
        bary[pix] = inv * zz[:, None]
        depth[pix] = zz
    return Fragments(face.view(height, width), bary.view(height, width, 3), depth.view(height, width))


def _empty_fragments(height: int, width: int, dev: torch.device) -> Fragments:
    return Fragments(torch.full((height, width), -1, dtype=torch.int64, device=dev),
                     torch.zeros((height, width, 3), dtype=torch.float64, device=dev),
                     torch.full((height, width), math.inf, dtype=torch.float64, device=dev))


def _screen_bary(fx, fy, px, py, area):
    """Screen-space barycentrics [N, 3] of points (px, py) in triangles (fx, fy: [N, 3])."""
    w0 = (fx[:, 1] - px) * (fy[:, 2] - py) - (fx[:, 2] - px) * (fy[:, 1] - py)
    w1 = (fx[:, 2] - px) * (fy[:, 0] - py) - (fx[:, 0] - px) * (fy[:, 2] - py)
    w2 = (fx[:, 0] - px) * (fy[:, 1] - py) - (fx[:, 1] - px) * (fy[:, 0] - py)
    return torch.stack([w0, w1, w2], 1) / area[:, None]


def _raster_chunk(ids, cnt, fx, fy, z, faces, area, j0, i0, bw, width, zbuf):
    total = int(cnt.sum())
    tri = torch.repeat_interleave(ids, cnt)
    first = torch.repeat_interleave(torch.cumsum(cnt, 0) - cnt, cnt)
    local = torch.arange(total, device=ids.device) - first
    w_box = bw[tri].to(torch.int64)
    col = j0[tri].to(torch.int64) + local % w_box
    row = i0[tri].to(torch.int64) + torch.div(local, w_box, rounding_mode="floor")
    px = col.to(torch.float64) + 0.5
    py = row.to(torch.float64) + 0.5
    w = _screen_bary(fx[tri], fy[tri], px, py, area[tri])
    inside = (w >= -EDGE_EPS).all(1)
    if not inside.any():
        return
    tri, w, col, row = tri[inside], w[inside], col[inside], row[inside]
    zf = z[faces[tri]]
    depth = 1.0 / (w / zf).sum(1)
    q = (depth.clamp(0.0, MAX_DEPTH_FOR_KEY - 1) * (1 << DEPTH_QUANT_BITS)).to(torch.int64)
    key = (q << FACE_BITS) | tri
    zbuf.scatter_reduce_(0, row * width + col, key, reduce="amin")


# ---------------------------------------------------------------------------------- shading
class MeshRenderer:
    """Renders a (static-topology) textured mesh with Lambert shading from :class:`BlenderCamera` s.

    Args:
        faces: [F, 3] int array; uv: [V, 2] or None; colors: [V, 4] linear or None;
        face_material: [F] int; materials: list of :class:`Material`.
        ssaa: supersampling factor per axis (alpha becomes fractional coverage).
        device: torch device.
    """

    def __init__(self, faces, materials: list[Material], face_material=None, uv=None, colors=None, ssaa: int = 1,
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.faces = torch.as_tensor(np.asarray(faces), dtype=torch.int64, device=self.device)
        fm = np.zeros(len(faces), np.int64) if face_material is None else np.asarray(face_material)
        self.face_material = torch.as_tensor(fm, dtype=torch.int64, device=self.device)
        self.uv = None if uv is None else torch.as_tensor(np.asarray(uv), dtype=torch.float64, device=self.device)
        self.colors = None if colors is None else torch.as_tensor(np.asarray(colors), dtype=torch.float64,
                                                                  device=self.device)
        self.materials = materials
        self.factors = torch.as_tensor(np.stack([np.asarray(m.base_color_factor, np.float64) for m in materials]),
                                       device=self.device)
        self.textures = [None if m.texture is None else
                         srgb_to_linear(torch.as_tensor(np.asarray(m.texture), device=self.device,
                                                        dtype=torch.float64)[..., :3] / 255.0)
                         for m in materials]
        self.ssaa = int(ssaa)
        if self.ssaa < 1:
            raise ValueError(f"ssaa must be >= 1, got {ssaa}")
        lights = [(np.asarray(d, np.float64) / np.linalg.norm(d), s) for d, s in LIGHTS]
        self.light_dirs = torch.as_tensor(np.stack([d for d, _ in lights]), device=self.device)
        self.light_pow = torch.as_tensor([s for _, s in lights], dtype=torch.float64, device=self.device)

    def render(self, vertices: np.ndarray, camera: BlenderCamera, smooth: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """One view: (RGBA uint8 [H, W, 4] sRGB, straight alpha; depth float32 [H, W], inf = empty).

        ``smooth``: interpolate area-weighted vertex normals (hard edges survive where the asset
        splits vertices, as glTF exporters do); otherwise flat face normals.
        """
        if self.device.type == "cpu":
            with cpu_threads(RASTER_CPU_THREADS):
                return self._render(vertices, camera, smooth)
        return self._render(vertices, camera, smooth)

    def _render(self, vertices: np.ndarray, camera: BlenderCamera, smooth: bool) -> tuple[np.ndarray, np.ndarray]:
        s = self.ssaa
        h, w = camera.height, camera.width
        cam = camera.resized(w * s, h * s)
        verts = torch.as_tensor(np.asarray(vertices), dtype=torch.float64, device=self.device)
        w2c = torch.as_tensor(cam.w2c_opencv, device=self.device)
        vc = verts @ w2c[:3, :3].T + w2c[:3, 3]
        frag = rasterize(vc, self.faces, torch.as_tensor(cam.intrinsics(), device=self.device), h * s, w * s)
        normals = vertex_normals(verts, self.faces) if smooth else None
        rgb_lin = self._shade(verts, frag, torch.as_tensor(cam.position, device=self.device), normals)
        alpha = (frag.face >= 0).to(torch.float64)
        if s > 1:
            prem = torch.cat([rgb_lin * alpha[..., None], alpha[..., None]], -1).permute(2, 0, 1)[None]
            prem = torch.nn.functional.avg_pool2d(prem, s)[0].permute(1, 2, 0)
            alpha = prem[..., 3]
            rgb_lin = prem[..., :3] / alpha.clamp_min(1e-12)[..., None]
            depth = -torch.nn.functional.max_pool2d(-frag.depth[None, None], s)[0, 0]
        else:
            depth = frag.depth
        rgb = linear_to_srgb(rgb_lin) * (alpha > 0)[..., None]
        rgba = torch.cat([rgb, alpha[..., None]], -1)
        rgba8 = (rgba * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).cpu().numpy()
        return rgba8, depth.to(torch.float32).cpu().numpy()

    def _shade(self, verts: torch.Tensor, frag: Fragments, cam_pos: torch.Tensor,
               normals: torch.Tensor | None = None) -> torch.Tensor:
        h, w = frag.face.shape
        out = torch.zeros((h, w, 3), dtype=torch.float64, device=self.device)
        hit = frag.face >= 0
        if not hit.any():
            return out
        f = frag.face[hit]
        b = frag.bary[hit]
        fv = self.faces[f]  # [P, 3]
        mat = self.face_material[f]
        albedo = self.factors[mat, :3].clone()
        if self.colors is not None:
            albedo = albedo * (self.colors[fv, :3] * b[..., None]).sum(1)
        if self.uv is not None:
            uv = (self.uv[fv] * b[..., None]).sum(1)
            for mi, tex in enumerate(self.textures):
                if tex is None:
                    continue
                sel = mat == mi
                if sel.any():
                    m = self.materials[mi]
                    albedo[sel] = albedo[sel] * sample_texture(tex, uv[sel], m.wrap_s, m.wrap_t)
        # double-sided: normals are turned towards the viewer using the geometric face normal
        p = verts[fv]
        fn = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
        fn = fn / fn.norm(dim=1, keepdim=True).clamp_min(1e-20)
        n = fn if normals is None else (normals[fv] * b[..., None]).sum(1)
        n = n / n.norm(dim=1, keepdim=True).clamp_min(1e-20)
        point = (p * b[..., None]).sum(1)
        to_cam = cam_pos - point
        n = torch.where(((fn * to_cam).sum(1, keepdim=True) < 0), -n, n)
        diffuse = (n @ self.light_dirs.T).clamp_min(0.0) @ self.light_pow
        out[hit] = albedo * (AMBIENT + diffuse)[:, None]
        return out


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals [V, 3] (zero for unused vertices)."""
    p = verts[faces]
    fn = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])  # length = 2 * area
    acc = torch.zeros_like(verts)
    for k in range(3):
        acc.index_add_(0, faces[:, k], fn)
    return acc / acc.norm(dim=1, keepdim=True).clamp_min(1e-20)


def _wrap(idx: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    if mode == "clamp":
        return idx.clamp(0, size - 1)
    if mode == "mirror":
        period = 2 * size
        m = torch.remainder(idx, period)
        return torch.where(m >= size, period - 1 - m, m)
    return torch.remainder(idx, size)


def sample_texture(tex: torch.Tensor, uv: torch.Tensor, wrap_s: str = "repeat", wrap_t: str = "repeat") -> torch.Tensor:
    """Bilinear lookup of ``tex`` [H, W, C] at glTF UVs [N, 2] (origin = top-left texel corner)."""
    th, tw = tex.shape[:2]
    x = uv[:, 0] * tw - 0.5
    y = uv[:, 1] * th - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    ax, ay = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.to(torch.int64), y0.to(torch.int64)
    xs = [_wrap(x0, tw, wrap_s), _wrap(x0 + 1, tw, wrap_s)]
    ys = [_wrap(y0, th, wrap_t), _wrap(y0 + 1, th, wrap_t)]
    return ((1 - ay) * ((1 - ax) * tex[ys[0], xs[0]] + ax * tex[ys[0], xs[1]])
            + ay * ((1 - ax) * tex[ys[1], xs[0]] + ax * tex[ys[1], xs[1]]))

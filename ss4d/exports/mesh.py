"""A triangle mesh per frame from 3D Gaussians alone: multi-view depth -> TSDF -> marching cubes.

The released SS4D has only a Gaussian decoder (no 4D mesh decoder), so the surface is recovered
from renders of the Gaussians:

1. **Views**: ``views`` cameras on a Fibonacci sphere around the object (TRELLIS orbit cameras,
   radius :data:`VIEW_RADIUS`, field of view :data:`VIEW_FOV_DEG`), each rendered with
   :func:`trellis_ext.renderers.render_gaussians` into colour, alpha and expected depth (camera z).
2. **TSDF fusion** (projective, Curless & Levoy 1996) on a ``grid``³ lattice over the object box
   :data:`GRID_BOUNDS` (+ a margin): for every voxel centre and view, ``sdf = depth(pixel) - z``;
   pixels with ``alpha < alpha_threshold`` are empty space (``sdf = +truncation``). Values are
   clamped to ``±truncation`` and averaged over the views that see the voxel in front of or just
   behind the surface, an empty-space observation with weight 1 and a surface one with the |cos|
   between the ray and the depth map's normal (grazing views and silhouette edges, where splats
   bleed outwards, count little); voxels no view ever sees (always more than one truncation behind
   a surface) are the interior (``-truncation``). Colour is averaged with the same weights over
   the views that see a voxel within one truncation of the surface.
3. **Marching cubes** (scikit-image) at level 0 on the zero-padded volume -> a closed surface.
4. **Simplification** (fast-simplification, quadric decimation) to at most ``target_faces``.
5. **Vertex colours**: the fused colour volume sampled trilinearly at the final vertices
   (normalised convolution: colour sum and weight interpolated separately).

Everything before marching cubes runs in PyTorch on the Gaussians' device (CPU or CUDA).

Output frame: the Z-up TRELLIS object frame (:func:`gaussians_to_mesh`); the files turn it Y-up
(:data:`Y_UP_TRANSFORM`, the rotation TRELLIS's own GLB export applies).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from trellis_ext.renderers import Camera, orbit_camera, project_points, render_gaussians

__all__ = ["MeshSettings", "MESH_QUALITY", "gaussians_to_mesh", "fibonacci_cameras", "fuse_tsdf", "TsdfVolume",
           "Y_UP_TRANSFORM", "GRID_BOUNDS"]

#: The object box of TRELLIS (``Gaussian`` default aabb): [-0.5, 0.5]³.
GRID_BOUNDS = (-0.5, 0.5)
#: Extra voxels of free space around the box, so surfaces touching it still close.
GRID_MARGIN_VOXELS = 2
#: Camera distance and field of view of the fusion views: at r = 2 a 50° view covers ±0.93 at the
#: origin's depth, so the whole box stays in frame from every direction.
VIEW_RADIUS = 2.0
VIEW_FOV_DEG = 50.0
#: Golden angle (radians) of the Fibonacci sphere.
GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
#: Z-up object frame -> Y-up file frame (glTF, OBJ): (x, y, z) -> (x, z, -y), a -90° turn about X.
#: TRELLIS's ``to_glb`` applies the same rotation.
Y_UP_TRANSFORM = ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, -1.0, 0.0))
#: TSDF value of a voxel that no view observed (the interior), in units of the truncation.
UNSEEN_TSDF = -1.0
#: Total view weight below which a voxel counts as unseen.
MIN_WEIGHT = 1e-3


@dataclass
class MeshSettings:
    """How a Gaussian frame becomes a mesh (defaults: ~14 s per frame of 20k Gaussians on one busy CPU
    core, nearly all of it the 24 renders; ``scripts/bench_exports.py``).

    Attributes:
        grid: TSDF voxels per side of the object box.
        views: fusion cameras on a Fibonacci sphere.
        image_size: render size of each view (pixels, square).
        truncation_voxels: TSDF truncation distance in voxels.
        alpha_threshold: rendered opacity below which a pixel is empty space.
        target_faces: simplify to at most this many triangles (0 keeps the marching-cubes mesh).
    """

    grid: int = 96
    views: int = 24
    image_size: int = 192
    truncation_voxels: float = 3.0
    alpha_threshold: float = 0.5
    target_faces: int = 20000

    def __post_init__(self):
        if self.grid < 8 or self.views < 4 or self.image_size < 16:
            raise ValueError(f"MeshSettings needs grid >= 8, views >= 4, image_size >= 16, got {self}")
        if not 0.0 < self.alpha_threshold < 1.0 or self.truncation_voxels <= 0 or self.target_faces < 0:
            raise ValueError(f"MeshSettings: alpha_threshold in (0, 1), truncation_voxels > 0, target_faces >= 0; "
                             f"got {self}")


#: Named settings: ``fast`` (~3x cheaper; previews, the web app on a CPU) and ``normal``.
MESH_QUALITY = {
    "fast": MeshSettings(grid=64, views=12, image_size=128, target_faces=10000),
    "normal": MeshSettings(),
}


def fibonacci_cameras(num_views: int, image_size: int, radius: float = VIEW_RADIUS,
                      fov_deg: float = VIEW_FOV_DEG) -> List[Camera]:
    """``num_views`` orbit cameras spread evenly over the sphere (Fibonacci lattice): view k at
    height ``z_k = 1 - (2k + 1) / n`` and yaw ``k * golden angle``; never exactly at a pole."""
    cams = []
    for k in range(num_views):
        z = 1.0 - (2 * k + 1) / num_views
        cams.append(orbit_camera(k * GOLDEN_ANGLE, math.asin(z), radius, fov_deg, image_size))
    return cams


@dataclass
class TsdfVolume:
    """A fused volume on a regular lattice.

    Attributes:
        tsdf: [R, R, R] truncated signed distance in units of the truncation (< 0 inside), indexed
            (x, y, z).
        weight: [R, R, R] total view weight: 1 per view that saw the voxel as empty space, |cos| of
            the viewing angle per view that saw it near or in front of a surface.
        color_sum: [R, R, R, 3] weighted sum of RGB over the views that saw the voxel near the surface.
        color_weight: [R, R, R] the sum of their weights.
        origin: world position of voxel (0, 0, 0)'s centre.
        voxel_size: lattice spacing (world units).
    """

    tsdf: torch.Tensor
    weight: torch.Tensor
    color_sum: torch.Tensor
    color_weight: torch.Tensor
    origin: float
    voxel_size: float

    def sample_colors(self, points: torch.Tensor) -> torch.Tensor:
        """[N, 3] world points -> [N, 3] RGB in [0, 1] (trilinear; grey where no colour was seen)."""
        res = self.tsdf.shape[0]
        idx = (points.to(self.tsdf) - self.origin) / self.voxel_size          # lattice coordinates (x, y, z)
        norm = idx / (res - 1) * 2 - 1                                       # grid_sample: [-1, 1]
        grid = norm[None, None, None, :, :]                                  # [1, 1, 1, N, 3] (x, y, z)
        # grid_sample's last coordinate indexes the input's last spatial dim: volumes as [C, Z, Y, X].
        vol = torch.cat([self.color_sum, self.color_weight[..., None]], dim=-1).permute(3, 2, 1, 0)[None]
        s = F.grid_sample(vol, grid, mode="bilinear", padding_mode="border", align_corners=True)[0, :, 0, 0, :]
        rgb = s[:3] / s[3:].clamp_min(1e-6)
        rgb = torch.where(s[3:] > 1e-6, rgb, torch.full_like(rgb, 0.5))
        return rgb.T.clamp(0, 1)


def _lattice(grid: int, device) -> Tuple[torch.Tensor, float, float, int]:
    """Voxel centres [R³, 3] (x-major), origin, spacing and R = grid + 2 * margin."""
    lo, hi = GRID_BOUNDS
    voxel = (hi - lo) / grid
    res = grid + 2 * GRID_MARGIN_VOXELS
    origin = lo - (GRID_MARGIN_VOXELS - 0.5) * voxel
    axis = origin + voxel * torch.arange(res, dtype=torch.float32, device=device)
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    return pts, origin, voxel, res


def _view_cosine(camera: Camera, depth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[H, W] |cos| between each pixel's viewing ray and the surface normal estimated from the depth
    map (cross product of central differences of the back-projected points); 0 where a pixel or one
    of its 4 neighbours is not surface (silhouette edges and grazing views carry no weight)."""
    h, w = depth.shape
    k = camera.pixel_intrinsics().to(depth)
    v, u = torch.meshgrid(torch.arange(h, device=depth.device, dtype=depth.dtype) + 0.5,
                          torch.arange(w, device=depth.device, dtype=depth.dtype) + 0.5, indexing="ij")
    rays = torch.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], torch.ones_like(u)], dim=-1)
    pts = rays * depth[..., None]
    pad = F.pad(pts.permute(2, 0, 1)[None], (1, 1, 1, 1), mode="replicate")[0].permute(1, 2, 0)
    du = pad[1:-1, 2:] - pad[1:-1, :-2]
    dv = pad[2:, 1:-1] - pad[:-2, 1:-1]
    normal = torch.linalg.cross(du, dv)
    cos = (normal * rays).sum(-1).abs() / (normal.norm(dim=-1) * rays.norm(dim=-1)).clamp_min(1e-12)
    vpad = F.pad(valid[None, None].float(), (1, 1, 1, 1))[0, 0]
    all_valid = (vpad[1:-1, 1:-1] * vpad[1:-1, 2:] * vpad[1:-1, :-2] * vpad[2:, 1:-1] * vpad[:-2, 1:-1]) > 0
    return torch.where(all_valid, cos, torch.zeros_like(cos))


def fuse_tsdf(views: Iterable[Tuple[Camera, torch.Tensor, torch.Tensor, torch.Tensor]], grid: int,
              truncation_voxels: float, alpha_threshold: float, device="cpu") -> TsdfVolume:
    """Fuse rendered views into a :class:`TsdfVolume`.

    Args:
        views: ``(camera, rgb [3, H, W], alpha [1, H, W], depth [1, H, W])`` per view; depth is the
            camera z of the surface (:class:`trellis_ext.renderers.RenderOutput`).
        grid: voxels per side of the object box :data:`GRID_BOUNDS`.
    """
    pts, origin, voxel, res = _lattice(grid, device)
    trunc = truncation_voxels * voxel
    n = pts.shape[0]
    tsdf_sum = torch.zeros(n, device=device)
    weight = torch.zeros(n, device=device)
    color_sum = torch.zeros(n, 3, device=device)
    color_weight = torch.zeros(n, device=device)
    for cam, rgb, alpha, depth in views:
        h, w = alpha.shape[-2:]
        uv, z = project_points(pts, cam.to(device))
        px, py = torch.floor(uv[:, 0]).long(), torch.floor(uv[:, 1]).long()
        inside = (z > 0) & (px >= 0) & (px < w) & (py >= 0) & (py < h)
        flat = (py.clamp(0, h - 1) * w + px.clamp(0, w - 1))
        pixel_surface = alpha[0] >= alpha_threshold
        cos = _view_cosine(cam.to(device), depth[0], pixel_surface).reshape(-1)[flat]
        surface = pixel_surface.reshape(-1)[flat]
        d = depth.reshape(-1)[flat]
        sdf = torch.where(surface, d - z, torch.full_like(z, trunc))
        # empty space counts fully; a surface observation by how squarely the view sees it
        wv = torch.where(surface, cos, torch.ones_like(cos)) * (inside & (sdf > -trunc)).float()
        tsdf_sum += wv * sdf.clamp(max=trunc) / trunc
        weight += wv
        near = surface & (sdf.abs() < trunc)
        wc = torch.where(near, wv, torch.zeros_like(wv))
        color_sum += wc[:, None] * rgb.reshape(3, -1).T[flat]
        color_weight += wc
    tsdf = torch.where(weight > MIN_WEIGHT, tsdf_sum / weight.clamp_min(MIN_WEIGHT),
                       torch.full_like(tsdf_sum, UNSEEN_TSDF))
    shape = (res, res, res)
    return TsdfVolume(tsdf.reshape(shape), weight.reshape(shape), color_sum.reshape(*shape, 3),
                      color_weight.reshape(shape), origin, voxel)


def _render_views(gaussians, settings: MeshSettings):
    device = gaussians.get_xyz.device
    with torch.no_grad():
        for cam in fibonacci_cameras(settings.views, settings.image_size):
            out = render_gaussians(gaussians, cam.to(device), bg_color=(0.0, 0.0, 0.0))
            yield cam, out.rgb, out.alpha, out.depth


def _marching_cubes(volume: TsdfVolume) -> Tuple[np.ndarray, np.ndarray]:
    from skimage.measure import marching_cubes

    vol = volume.tsdf.detach().cpu().numpy().astype(np.float32)
    vol = np.pad(vol, 1, constant_values=1.0)             # free space all round: the surface closes
    if not (vol.min() < 0.0 < vol.max()):
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    verts, faces, _, _ = marching_cubes(vol, level=0.0, spacing=(volume.voxel_size,) * 3)
    verts = verts + (volume.origin - volume.voxel_size)     # undo the padding voxel
    return verts.astype(np.float32), faces.astype(np.int64)


def _simplify(verts: np.ndarray, faces: np.ndarray, target_faces: int) -> Tuple[np.ndarray, np.ndarray]:
    if target_faces == 0 or len(faces) <= target_faces:
        return verts, faces
    import fast_simplification

    v, f = fast_simplification.simplify(verts, faces.astype(np.int32), target_reduction=1.0 - target_faces / len(faces))
    return np.asarray(v, np.float32), np.asarray(f, np.int64)


def gaussians_to_mesh(gaussians, settings: MeshSettings = MeshSettings()):
    """One frame of Gaussians -> a vertex-coloured ``trimesh.Trimesh`` in the Z-up object frame.

    An empty frame (nothing opaque rendered) gives an empty mesh (0 vertices, 0 faces).
    """
    import trimesh

    device = gaussians.get_xyz.device
    volume = fuse_tsdf(_render_views(gaussians, settings), settings.grid, settings.truncation_voxels,
                       settings.alpha_threshold, device=device)
    verts, faces = _marching_cubes(volume)
    verts, faces = _simplify(verts, faces, settings.target_faces)
    if len(faces) == 0:
        return trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), process=False)
    rgb = volume.sample_colors(torch.from_numpy(verts).to(device)).cpu().numpy()
    colors = np.concatenate([np.round(rgb * 255), np.full((len(rgb), 1), 255)], axis=1).astype(np.uint8)
    mesh = trimesh.Trimesh(verts, faces, vertex_colors=colors, process=False)
    mesh.update_faces(mesh.nondegenerate_faces())     # decimation can leave zero-area slivers
    mesh.remove_unreferenced_vertices()
    return mesh

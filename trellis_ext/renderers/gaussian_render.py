"""``render_gaussians``: one entry point, two backends (gsplat on CUDA, PyTorch reference).

Backend choice (``backend`` argument, or the ``RASTERIZER_BACKEND`` environment variable when
the argument is ``"auto"``): ``"auto"`` uses gsplat when the Gaussians are on CUDA and gsplat
imports, the PyTorch reference otherwise; ``"torch"`` / ``"gsplat"`` force one (forcing gsplat on
CPU tensors is an error).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from ..representations.gaussian import SH_C0
from .camera import Camera
from .rasterize_gsplat import gsplat_available, rasterize_gsplat
from .rasterize_torch import DEFAULT_KERNEL_SIZE, MIN_DEPTH, TILE_SIZE, project_gaussians, rasterize_tiles

__all__ = ["RenderOutput", "render_gaussians", "rasterize_gaussians", "resolve_backend",
           "sh0_to_rgb", "BACKENDS", "BACKEND_ENV_VAR"]

BACKENDS = ("auto", "torch", "gsplat")
BACKEND_ENV_VAR = "RASTERIZER_BACKEND"
#: RGB = SH_C0 * f_dc + SH_DC_OFFSET, clamped at 0 (3DGS's degree-0 colour).
SH_DC_OFFSET = 0.5
#: TRELLIS renderer defaults (``render_utils.get_renderer``; ``DEFAULT_KERNEL_SIZE`` from rasterize_torch).
DEFAULT_NEAR = 0.8
DEFAULT_FAR = 1.6


@dataclass
class RenderOutput:
    """One rendered view.

    Attributes:
        rgb: [3, H, W] colour composited over the background (not clamped to 1).
        alpha: [1, H, W] accumulated opacity 1 - T_final.
        depth: [1, H, W] expected camera z of the drawn Gaussians (sum w z / alpha; 0 where
            alpha = 0).
        backend: which rasteriser produced it (``"torch"`` or ``"gsplat"``).
    """

    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    backend: str

    @property
    def color(self) -> torch.Tensor:
        """Alias of ``rgb`` (the key TRELLIS's renderer returns)."""
        return self.rgb


def sh0_to_rgb(features_dc: torch.Tensor) -> torch.Tensor:
    """[M, 1, 3] or [M, 3] SH-DC coefficients -> [M, 3] RGB, clamped at 0 (like 3DGS)."""
    return (SH_C0 * features_dc.reshape(features_dc.shape[0], 3) + SH_DC_OFFSET).clamp_min(0)


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend (``"torch"`` / ``"gsplat"``) for a request and a tensor device."""
    if backend == "auto":
        backend = os.environ.get(BACKEND_ENV_VAR, "auto").strip().lower() or "auto"
    if backend not in BACKENDS:
        raise ValueError(f"unknown rasterizer backend {backend!r}; expected one of {BACKENDS} "
                         f"(argument or ${BACKEND_ENV_VAR})")
    if backend == "auto":
        return "gsplat" if device.type == "cuda" and gsplat_available() else "torch"
    if backend == "gsplat":
        if not gsplat_available():
            raise ImportError("backend 'gsplat' requested but gsplat is not installed "
                              "(pip install gsplat; CUDA only)")
        if device.type != "cuda":
            raise RuntimeError("backend 'gsplat' requested for CPU tensors; gsplat runs on CUDA only")
    return backend


def rasterize_gaussians(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    camera: Camera,
    *,
    bg_color: Union[Sequence[float], torch.Tensor] = (0.0, 0.0, 0.0),
    backend: str = "auto",
    kernel_size: float = DEFAULT_KERNEL_SIZE,
    min_depth: float = MIN_DEPTH,
    tile_size: int = TILE_SIZE,
) -> RenderOutput:
    """Render raw Gaussian tensors (the functional core of :func:`render_gaussians`).

    Args:
        means: [N, 3] world centres.
        quats: [N, 4] (w, x, y, z) orientations (need not be unit).
        scales: [N, 3] world standard deviations.
        opacities: [N] or [N, 1].
        colors: [N, C] post-activation colours (C = 3 for RGB; any C for the torch backend).
        camera: view (see :mod:`trellis_ext.renderers.camera`).
        bg_color: [C] background.
        backend: ``"auto" | "torch" | "gsplat"``.
        kernel_size: mip-splatting 2D filter (pixels^2).
        min_depth: near cull distance (camera z).
        tile_size: tile edge in pixels.
    """
    which = resolve_backend(backend, means.device)
    background = torch.as_tensor(bg_color, dtype=colors.dtype, device=colors.device).reshape(-1)
    if background.numel() != colors.shape[1]:
        raise ValueError(f"bg_color has {background.numel()} channels, colours have {colors.shape[1]}")
    if which == "gsplat":
        rgb, alpha, depth = rasterize_gsplat(means, quats, scales, opacities, colors, camera,
                                             background, kernel_size, min_depth, tile_size)
    else:
        proj = project_gaussians(means, quats, scales, opacities, camera, kernel_size, min_depth)
        rgb, alpha, depth = rasterize_tiles(proj, colors, camera.width, camera.height, background, tile_size)
    return RenderOutput(rgb.permute(2, 0, 1), alpha[None], depth[None], which)


def render_gaussians(
    gaussians,
    camera: Camera,
    *,
    bg_color: Union[Sequence[float], torch.Tensor] = (0.0, 0.0, 0.0),
    backend: str = "auto",
    near: float = DEFAULT_NEAR,
    far: float = DEFAULT_FAR,
    kernel_size: float = DEFAULT_KERNEL_SIZE,
    scale_modifier: float = 1.0,
    override_color: Optional[torch.Tensor] = None,
    min_depth: float = MIN_DEPTH,
    tile_size: int = TILE_SIZE,
) -> RenderOutput:
    """Render a :class:`~trellis_ext.representations.Gaussian` from one camera, as TRELLIS does.

    Args:
        gaussians: anything with TRELLIS's ``get_xyz [M,3]``, ``get_rotation [M,4]``,
            ``get_scaling [M,3]``, ``get_opacity [M,1]``, ``get_features [M,1,3]``.
        camera: :class:`Camera` (OpenCV world-to-camera extrinsics, normalised intrinsics).
        bg_color: RGB background in [0, 1] (TRELLIS renders on black).
        backend: ``"auto" | "torch" | "gsplat"`` (``"auto"`` defers to ``$RASTERIZER_BACKEND``).
        near, far: TRELLIS's renderer options, accepted for API parity. TRELLIS's rasteriser only
            uses them inside a projection matrix whose depth row never affects the image, and so
            do we: they do not clip (a far plane of 1.6 would cut objects seen from r = 2).
            Culling is ``camera z <= min_depth``.
        kernel_size: mip-splatting 2D filter variance in pixels^2 (TRELLIS: 0.1).
        scale_modifier: multiplies every scale (TRELLIS's ``scaling_modifier``).
        override_color: [M, 3] colours to splat instead of the SH colour.
        min_depth: near cull distance (3DGS: 0.2).
        tile_size: tile edge in pixels.
    Returns:
        :class:`RenderOutput` with ``rgb [3,H,W]``, ``alpha [1,H,W]``, ``depth [1,H,W]``.
    """
    if near >= far:
        raise ValueError(f"near ({near}) must be < far ({far})")
    colors = override_color if override_color is not None else sh0_to_rgb(gaussians.get_features)
    return rasterize_gaussians(
        gaussians.get_xyz,
        gaussians.get_rotation,
        gaussians.get_scaling * scale_modifier,
        gaussians.get_opacity,
        colors,
        camera,
        bg_color=bg_color,
        backend=backend,
        kernel_size=kernel_size,
        min_depth=min_depth,
        tile_size=tile_size,
    )

"""gsplat backend (CUDA only): a thin adapter from our camera conventions to
``gsplat.rasterization``.

Mapping: viewmat = our OpenCV extrinsics; K = normalised intrinsics scaled to pixels (gsplat puts
pixel i's centre at i + 0.5, as we do); ``eps2d = kernel_size`` with ``rasterize_mode =
"antialiased"`` is mip-splatting's 2D filter (opacity compensation included); ``near_plane =
min_depth``; ``render_mode = "RGB+ED"`` gives the expected depth. Known differences from the
PyTorch reference: gsplat clamps alpha at 0.999 (we, like TRELLIS's rasteriser, at 0.99) and
bins with its own radius estimate, so images agree to within small tolerances, not bit for bit.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from typing import Tuple

import torch

from .camera import Camera

__all__ = ["gsplat_available", "rasterize_gsplat"]

#: far plane passed to gsplat: effectively none (TRELLIS's rasteriser has no far culling).
NO_FAR_PLANE = 1e10


@lru_cache(maxsize=1)
def gsplat_available() -> bool:
    """True when the ``gsplat`` package is importable (it still needs CUDA to run)."""
    return importlib.util.find_spec("gsplat") is not None


def rasterize_gsplat(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    camera: Camera,
    background: torch.Tensor,
    kernel_size: float,
    min_depth: float,
    tile_size: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render with ``gsplat.rasterization``; inputs as in :func:`rasterize_gaussians`.

    Returns ``rgb [H, W, C]``, ``alpha [H, W]``, ``depth [H, W]``.
    """
    if not means.is_cuda:
        raise RuntimeError("the gsplat backend needs CUDA tensors (gsplat has no CPU path); "
                           "use backend='torch'")
    import gsplat

    dtype = means.dtype
    viewmat = camera.extrinsics.to(device=means.device, dtype=dtype)[None]
    k_pix = camera.pixel_intrinsics().to(device=means.device, dtype=dtype)[None]
    render, alphas, _ = gsplat.rasterization(
        means, quats, scales, opacities.reshape(-1), colors, viewmat, k_pix,
        camera.width, camera.height,
        near_plane=min_depth, far_plane=NO_FAR_PLANE,
        eps2d=kernel_size,
        rasterize_mode="antialiased" if kernel_size > 0 else "classic",
        tile_size=tile_size,
        backgrounds=background.to(device=means.device, dtype=dtype)[None],
        render_mode="RGB+ED",
    )
    return render[0, ..., :-1], alphas[0, ..., 0], render[0, ..., -1]

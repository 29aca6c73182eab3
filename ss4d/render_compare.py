"""Two generation results compared through their renders (speed options against the faithful path).

:func:`render_views` renders every frame's Gaussians from fixed orbit cameras (the official demo
grid's four yaws at one pitch, by default); :func:`compare_renders` gives the PSNR over all of them
(one MSE over every pixel, view and frame; ``inf`` when identical, unlike
:func:`ss4d.evaluation.psnr`'s per-image floor) and the mean silhouette IoU of the accumulated
opacity. Used by ``scripts/bench_quality.py`` (CPU, trained small model) and the fp8 row of
``scripts/bench_pipeline.py`` (GPU).
"""
from __future__ import annotations

import math
from typing import Any, Sequence, Tuple

import torch

from .evaluation.metrics import SILHOUETTE_THRESHOLD
from .render import GRID_PITCH_DEG, GRID_YAWS_DEG

__all__ = ["render_views", "compare_renders", "COMPARE_RESOLUTION"]

#: Render size of the comparisons (pixels).
COMPARE_RESOLUTION = 128


def render_views(gaussians: Sequence[Any], yaws_deg: Sequence[float] = GRID_YAWS_DEG,
                 pitch_deg: float = GRID_PITCH_DEG, resolution: int = COMPARE_RESOLUTION,
                 frames: Sequence[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """rgb ``[F·V, 3, H, W]`` in [0, 1] (white background) and alpha ``[F·V, H, W]`` of the listed
    ``frames`` (default all) from every yaw, on the Gaussians' device."""
    from trellis_ext.renderers import orbit_camera, render_gaussians

    rgb, alpha = [], []
    for t in (range(len(gaussians)) if frames is None else frames):
        g = gaussians[t]
        for yaw in yaws_deg:
            cam = orbit_camera(math.radians(yaw), math.radians(pitch_deg), resolution=resolution)
            out = render_gaussians(g, cam.to(g.get_xyz.device), bg_color=(1.0, 1.0, 1.0))
            rgb.append(out.rgb.clamp(0, 1))
            alpha.append(out.alpha[0])
    return torch.stack(rgb), torch.stack(alpha)


def compare_renders(rgb: torch.Tensor, alpha: torch.Tensor, ref_rgb: torch.Tensor,
                    ref_alpha: torch.Tensor) -> Tuple[float, float]:
    """(PSNR in dB over every pixel of every render, ``inf`` when identical; mean silhouette IoU,
    two empty silhouettes counting as 1)."""
    mse = float((rgb.double() - ref_rgb.double()).pow(2).mean())
    psnr = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
    p, g = alpha > SILHOUETTE_THRESHOLD, ref_alpha > SILHOUETTE_THRESHOLD
    inter = (p & g).flatten(1).sum(1).double()
    union = (p | g).flatten(1).sum(1).double()
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    return psnr, float(iou.mean())

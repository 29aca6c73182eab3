"""Rendering-loss glue of the Gaussian VAE (TRELLIS ``structured_latent_vae_gaussian`` trainer).

``loss = λ_l1·L1 + λ_ssim·(1 - SSIM) + λ_lpips·LPIPS + λ_kl·KL + λ_vol·mean(∏ scale) + λ_opacity·mean((α - 1)²)``

with TRELLIS's weights (:data:`TRELLIS_VAE_WEIGHTS`). The image metrics are passed in as callables
(``ssim(pred, gt) -> [B]``, ``lpips(pred, gt) -> [B]`` for images [B, 3, H, W] in [0, 1]), so this
module holds no second SSIM/LPIPS implementation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Dict, Optional

import torch

__all__ = ["RenderLossWeights", "TRELLIS_VAE_WEIGHTS", "kl_divergence", "gaussian_regularizers", "image_losses"]

ImageMetric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RenderLossWeights:
    l1: float = 1.0
    ssim: float = 0.2
    lpips: float = 0.2
    kl: float = 1e-6
    volume: float = 1e4
    opacity: float = 1e-3

    def as_dict(self) -> Dict[str, float]:
        return asdict(self)


TRELLIS_VAE_WEIGHTS = RenderLossWeights()


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)), averaged over all elements (TRELLIS's ``0.5·mean(μ² + σ² - log σ² - 1)``)."""
    return 0.5 * torch.mean(mean.pow(2) + logvar.exp() - logvar - 1)


def gaussian_regularizers(gaussian) -> Dict[str, torch.Tensor]:
    """``volume``: mean over Gaussians of ∏ scale; ``opacity``: mean of (α - 1)² (TRELLIS's regularisers)."""
    return {"volume": gaussian.get_scaling.prod(dim=-1).mean(),
            "opacity": (gaussian.get_opacity - 1).pow(2).mean()}


def image_losses(pred: torch.Tensor, gt: torch.Tensor, weights: RenderLossWeights,
                 ssim: Optional[ImageMetric] = None, lpips: Optional[ImageMetric] = None) -> Dict[str, torch.Tensor]:
    """Per-term image losses of renders ``pred`` vs ``gt`` [B, 3, H, W] in [0, 1] (means over the batch).

    ``ssim`` / ``lpips`` are required when their weight is non-zero."""
    out = {"l1": (pred - gt).abs().mean()}
    if weights.ssim:
        if ssim is None:
            raise ValueError("an SSIM weight needs an ssim function")
        out["ssim"] = 1 - ssim(pred, gt).mean()
    if weights.lpips:
        if lpips is None:
            raise ValueError("an LPIPS weight needs an lpips module")
        out["lpips"] = lpips(pred, gt).mean()
    return out

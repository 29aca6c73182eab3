"""FVD: the Fréchet distance between I3D features of predicted and ground-truth videos.

The I3D network is StyleGAN-V's Kinetics-400 TorchScript (``i3d_torchscript.pt``), the one V2M4 and
most recent video works use, read from a local file (nothing is downloaded). Calling convention
of that file: ``model(x [N, 3, T, 224, 224] in [-1, 1], rescale=False, resize=False,
return_features=True) -> [N, 400]`` (the logits before the softmax). Our preprocessing: shorter side
resized to 224 (bilinear), centre crop, ``2x - 1``.

**Pooled FVD.** Consistent4D's script computes a Fréchet distance per object and view from *one*
clip on each side, where the covariance is undefined (NaN). We pool: one clip per (object, view)
on each side, one Fréchet distance over all of them (:func:`fvd_from_features`), so it needs at
least two clips per side; with few clips the value is noisy and biased upwards. The benchmark
reports the number of clips next to it.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .metrics import frechet_distance
from .weights import require_weights

__all__ = ["I3D_SIZE", "I3D_MIN_FRAMES", "load_i3d", "i3d_features", "fvd_from_features"]

I3D_SIZE = 224
I3D_MIN_FRAMES = 8  # the I3D's temporal pooling needs clips of at least this many frames
I3D_KWARGS = {"rescale": False, "resize": False, "return_features": True}


def load_i3d(path: Optional[str | os.PathLike] = None, weights_folder: Optional[str | os.PathLike] = None,
             device: Optional[torch.device | str] = None) -> torch.jit.ScriptModule:
    """The I3D TorchScript (``$SS4D_I3D_WEIGHTS`` or ``<weights folder>/i3d_torchscript.pt``), in eval mode."""
    p = require_weights("i3d", path, weights_folder)
    try:
        model = torch.jit.load(str(p), map_location=device or "cpu")
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"{p} is not a TorchScript file ({str(exc).splitlines()[0]})",
                         "pass StyleGAN-V's i3d_torchscript.pt") from None
    return model.eval()


def _prepare(videos: torch.Tensor) -> torch.Tensor:
    """[N, T, 3, H, W] in [0, 1] -> [N, 3, T, 224, 224] in [-1, 1]."""
    n, t, c, h, w = videos.shape
    x = videos.reshape(n * t, c, h, w).float()
    scale = I3D_SIZE / min(h, w)
    nh, nw = max(I3D_SIZE, round(h * scale)), max(I3D_SIZE, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    top, left = (nh - I3D_SIZE) // 2, (nw - I3D_SIZE) // 2
    x = x[..., top:top + I3D_SIZE, left:left + I3D_SIZE]
    return (2.0 * x - 1.0).reshape(n, t, c, I3D_SIZE, I3D_SIZE).permute(0, 2, 1, 3, 4).contiguous()


@torch.no_grad()
def i3d_features(model, videos: torch.Tensor, batch_size: int = 4) -> np.ndarray:
    """I3D features of videos ``[N, T, 3, H, W]`` in [0, 1] -> ``[N, D]`` float64 (D = 400 for I3D-400)."""
    if videos.ndim != 5 or videos.shape[2] != 3:
        raise ValueError(f"expected videos [N, T, 3, H, W], got shape {tuple(videos.shape)}")
    if videos.shape[1] < I3D_MIN_FRAMES:
        raise ValueError(f"FVD needs clips of at least {I3D_MIN_FRAMES} frames, got {videos.shape[1]}")
    device = next(iter(model.parameters()), torch.zeros(())).device
    out = []
    for i in range(0, videos.shape[0], batch_size):
        x = _prepare(videos[i:i + batch_size]).to(device)
        out.append(model(x, **I3D_KWARGS).double().cpu().numpy())
    return np.concatenate(out, 0)


def fvd_from_features(pred_feats: np.ndarray, gt_feats: np.ndarray) -> float:
    """Pooled FVD from per-clip features ``[N, D]`` and ``[M, D]`` (N, M >= 2)."""
    return frechet_distance(pred_feats, gt_feats)

"""Image, video and geometry metrics of the SS4D protocol, as small batched functions on tensors.

Every function is differentiable where the metric is (PSNR, SSIM, flicker; LPIPS lives in
:mod:`ss4d.evaluation.lpips`), runs on the device of its inputs (CPU or CUDA) and returns one value
per batch item, so the trainer can use the same code for its losses and validation snapshots.

Layouts:

* images ``[B, C, H, W]`` float in ``[0, data_range]`` (``data_range`` 1.0 by default);
* videos at a fixed camera ``[B, T, C, H, W]`` (or ``[T, C, H, W]`` for one video);
* silhouettes ``[B, H, W]`` alpha in [0, 1];
* point sets ``[N, 3]`` / ``[M, 3]`` float.

PSNR, SSIM and flicker are our own code rather than torchmetrics': TRELLIS's training loss uses
SSIM with zero padding over the full image, which torchmetrics does not offer (it pads by
reflection), and the trainer must be able to use the very function the evaluation reports.
``padding="valid"`` (the default) equals scikit-image's ``structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False)`` (tested to 1e-4); torchmetrics'
``structural_similarity_index_measure`` differs from both by a few 1e-3 on 40x48 noise images
(its border handling), so numbers from Consistent4D's script (torchmetrics) are close, not equal.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "SSIM_WINDOW", "SSIM_SIGMA", "SSIM_K1", "SSIM_K2", "SILHOUETTE_THRESHOLD", "PSNR_EPS",
    "psnr", "ssim", "gaussian_window", "flicker", "silhouette_iou", "chamfer_distance", "frechet_distance",
    "mse",
]

SSIM_WINDOW = 11          # Gaussian window side (Wang et al. 2004; TRELLIS; the paper's protocol)
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
SILHOUETTE_THRESHOLD = 0.5  # alpha above which a pixel is inside the silhouette
PSNR_EPS = 1e-10            # floor of the MSE, so identical images give a finite (large) PSNR
CHAMFER_CHUNK = 4096        # query points per distance block (memory: CHUNK x M floats)


def _check_pair(pred: torch.Tensor, gt: torch.Tensor, ndim: int, layout: str) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction and ground truth differ in shape: {tuple(pred.shape)} vs {tuple(gt.shape)}")
    if pred.ndim != ndim:
        raise ValueError(f"expected {layout} ({ndim} dims), got shape {tuple(pred.shape)}")


def mse(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean squared error per item: ``[B, ...]`` x 2 -> ``[B]``."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction and ground truth differ in shape: {tuple(pred.shape)} vs {tuple(gt.shape)}")
    return (pred - gt).pow(2).flatten(1).mean(1)


def psnr(pred: torch.Tensor, gt: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image: ``[B, C, H, W]`` x 2 -> ``[B]``.

    ``10 log10(data_range² / MSE)``, the MSE taken over all channels and pixels of each image
    (floored at :data:`PSNR_EPS` · data_range², so identical images give 100 dB rather than inf).
    """
    _check_pair(pred, gt, 4, "[B, C, H, W]")
    dtype = torch.promote_types(pred.dtype, torch.float32)
    err = mse(pred.to(dtype), gt.to(dtype)).clamp_min(PSNR_EPS * data_range ** 2)
    return 10.0 * torch.log10(data_range ** 2 / err)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, device=None,
                    dtype=torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian ``[size]`` centred on the middle tap."""
    x = torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2.0
    w = torch.exp(-(x ** 2) / (2.0 * sigma ** 2))
    return (w / w.sum()).to(dtype)


def _blur(x: torch.Tensor, window: torch.Tensor, pad: int) -> torch.Tensor:
    """Separable Gaussian filter of ``[B, C, H, W]``, per channel, zero padding ``pad``."""
    c = x.shape[1]
    k = window.numel()
    kh = window.view(1, 1, k, 1).expand(c, 1, k, 1)
    kw = window.view(1, 1, 1, k).expand(c, 1, 1, k)
    x = F.conv2d(x, kh, padding=(pad, 0), groups=c)
    return F.conv2d(x, kw, padding=(0, pad), groups=c)


def ssim(pred: torch.Tensor, gt: torch.Tensor, data_range: float = 1.0, window_size: int = SSIM_WINDOW,
         sigma: float = SSIM_SIGMA, padding: Literal["valid", "zero"] = "valid",
         reduce: bool = True) -> torch.Tensor:
    """Structural similarity (Gaussian window), per image: ``[B, C, H, W]`` x 2 -> ``[B]``.

    ``padding``:
      * ``"valid"`` (default, the evaluation's): the SSIM map only where the whole window lies
        inside the image (``H - window_size + 1`` rows), averaged over channels and pixels; equal
        to scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=...)`` averaged over channels.
      * ``"zero"``: TRELLIS's training loss (``loss_utils.ssim``): zero padding of
        ``window_size // 2``, the map averaged over the full image.

    ``reduce=False`` returns the SSIM map ``[B, C, H', W']`` instead of its mean.
    Images must be at least ``window_size`` pixels on each side.
    """
    _check_pair(pred, gt, 4, "[B, C, H, W]")
    if min(pred.shape[-2:]) < window_size:
        raise ValueError(f"SSIM needs images of at least {window_size}x{window_size} pixels, got "
                         f"{tuple(pred.shape[-2:])}")
    if padding not in ("valid", "zero"):
        raise ValueError(f"padding must be 'valid' or 'zero', got {padding!r}")
    dtype = torch.promote_types(pred.dtype, torch.float32)
    x, y = pred.to(dtype), gt.to(dtype)
    w = gaussian_window(window_size, sigma, x.device, dtype)
    pad = window_size // 2 if padding == "zero" else 0
    # one filtering pass over the five moments
    b = x.shape[0]
    stats = _blur(torch.cat([x, y, x * x, y * y, x * y], 0), w, pad)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(b, 0)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    smap = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return smap if not reduce else smap.flatten(1).mean(1)


def flicker(video: torch.Tensor) -> torch.Tensor:
    """Temporal flicker of a fixed-camera video: mean ``|I_{t+1} - I_t|`` over t, channels, pixels.

    ``video``: ``[B, T, C, H, W]`` (or ``[T, C, H, W]``) in [0, 1] -> ``[B]`` (or a scalar). The
    SS4D VAE ablation's measure; lower is steadier. Report the ground truth's own value beside it
    (real motion flickers too). Needs ``T >= 2``.
    """
    single = video.ndim == 4
    v = video.unsqueeze(0) if single else video
    if v.ndim != 5:
        raise ValueError(f"expected a video [B, T, C, H, W] or [T, C, H, W], got shape {tuple(video.shape)}")
    if v.shape[1] < 2:
        raise ValueError(f"flicker needs at least 2 frames, got {v.shape[1]}")
    dtype = torch.promote_types(v.dtype, torch.float32)
    out = (v[:, 1:].to(dtype) - v[:, :-1].to(dtype)).abs().flatten(1).mean(1)
    return out[0] if single else out


def silhouette_iou(pred_alpha: torch.Tensor, gt_alpha: torch.Tensor,
                   threshold: float = SILHOUETTE_THRESHOLD) -> torch.Tensor:
    """Intersection over union of the silhouettes ``alpha > threshold``: ``[B, H, W]`` x 2 -> ``[B]``.

    Two empty silhouettes count as a perfect match (1.0). Not differentiable (a threshold).
    """
    _check_pair(pred_alpha, gt_alpha, 3, "[B, H, W]")
    p = pred_alpha > threshold
    g = gt_alpha > threshold
    inter = (p & g).flatten(1).sum(1).double()
    union = (p | g).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)).float()


def _nearest_distances(a: torch.Tensor, b: torch.Tensor, chunk: int = CHAMFER_CHUNK) -> torch.Tensor:
    """Euclidean distance from every point of ``a`` [N, 3] to its nearest point of ``b`` [M, 3] -> [N]."""
    out = [torch.cdist(a[i:i + chunk], b, compute_mode="donot_use_mm_for_euclid_dist").min(1).values
           for i in range(0, a.shape[0], chunk)]
    return torch.cat(out)


def chamfer_distance(pred_points: torch.Tensor, gt_points: torch.Tensor) -> torch.Tensor:
    """Symmetric Chamfer distance: ``mean_p min_g |p - g| + mean_g min_p |g - p|`` (Euclidean, not squared).

    ``pred_points`` ``[N, 3]``, ``gt_points`` ``[M, 3]`` in the same frame and unit (e.g. voxel
    centres in the normalised cube [-0.5, 0.5]³) -> a scalar. Empty sets raise ``ValueError``.
    """
    if pred_points.ndim != 2 or gt_points.ndim != 2 or pred_points.shape[1] != gt_points.shape[1]:
        raise ValueError(f"expected point sets [N, D] and [M, D], got {tuple(pred_points.shape)} and "
                         f"{tuple(gt_points.shape)}")
    if pred_points.shape[0] == 0 or gt_points.shape[0] == 0:
        raise ValueError("Chamfer distance of an empty point set is undefined")
    dtype = torch.promote_types(torch.promote_types(pred_points.dtype, gt_points.dtype), torch.float32)
    a, b = pred_points.to(dtype), gt_points.to(dtype)
    return _nearest_distances(a, b).mean() + _nearest_distances(b, a).mean()


def frechet_distance(feats_a: np.ndarray | torch.Tensor, feats_b: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``[N, D]`` and ``[M, D]`` (FID/FVD).

    ``|mu_a - mu_b|² + tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` with unbiased covariances (N-1), computed
    in float64. The trace of the matrix square root is taken from the eigenvalues of
    ``S_a^{1/2} S_b S_a^{1/2}`` (symmetric, so exact up to rounding). Needs ``N, M >= 2``.
    """
    a = np.asarray(feats_a.detach().cpu() if torch.is_tensor(feats_a) else feats_a, dtype=np.float64)
    b = np.asarray(feats_b.detach().cpu() if torch.is_tensor(feats_b) else feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected features [N, D] and [M, D], got {a.shape} and {b.shape}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"the Fréchet distance needs at least 2 samples per side (a covariance), got "
                         f"{a.shape[0]} and {b.shape[0]}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    s_a, s_b = np.atleast_2d(s_a), np.atleast_2d(s_b)
    sqrt_a = _psd_sqrt(s_a)
    inner = sqrt_a @ s_b @ sqrt_a
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2.0), 0.0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * tr_sqrt)


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative rounding eigenvalues -> 0)."""
    vals, vecs = np.linalg.eigh((m + m.T) / 2.0)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


"""Evaluation of 4D outputs (``ss4d-eval``): the SS4D paper's metrics and a reproducible benchmark.

* :mod:`.metrics` - PSNR, SSIM, flicker, silhouette IoU, Chamfer distance, Fréchet distance (tensors in,
  one value per item out; differentiable where the metric is).
* :mod:`.lpips` - LPIPS (VGG / AlexNet) from local backbone weights, no torchvision.
* :mod:`.weights` - where pretrained networks are found on disk (nothing is downloaded).

See ``docs/evaluation.md``.
"""
from .metrics import chamfer_distance, flicker, frechet_distance, psnr, silhouette_iou, ssim  # noqa: F401

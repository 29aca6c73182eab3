"""Evaluation of 4D outputs (``ss4d-eval``): the SS4D paper's metrics and a reproducible benchmark.

* :mod:`.metrics` - PSNR, SSIM, flicker, silhouette IoU, Chamfer distance, Fréchet distance (tensors in,
  one value per item out; differentiable where the metric is).
* :mod:`.lpips` - LPIPS (VGG / AlexNet) from local backbone weights, no torchvision.
* :mod:`.clip_score`, :mod:`.fvd` - CLIP-S and FVD from local networks.
* :mod:`.weights` - where pretrained networks are found on disk (nothing is downloaded).
* :mod:`.scoring` - per-view scoring and summaries; :mod:`.sequences` / :mod:`.images` - image folders;
  :mod:`.alignment` / :mod:`.asset` - scoring an ss4d output at a dataset sample's cameras;
  :mod:`.benchmark` - the benchmark; :mod:`.report` - JSON, Markdown, contact sheet; :mod:`.cli` - ``ss4d-eval``.

See ``docs/evaluation.md``.
"""
from .metrics import chamfer_distance, flicker, frechet_distance, psnr, silhouette_iou, ssim

__all__ = ["psnr", "ssim", "flicker", "silhouette_iou", "chamfer_distance", "frechet_distance"]

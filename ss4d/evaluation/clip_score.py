"""CLIP-S: cosine similarity of CLIP image embeddings, prediction vs ground truth (image–image).

The protocol of Consistent4D's ``compute_image_level_metrics.py`` that SS4D reports: the
``openai/clip-vit-base-patch32`` image tower with its projection, on images composited over white.
The encoder is read from a local transformers folder (a full CLIP folder or a vision-only one);
nothing is downloaded. Preprocessing is CLIP's, in torch (so it runs on the images' device):
shorter side resized to the model's input size (bicubic, antialiased), centre crop, CLIP
normalisation. PIL's bicubic differs from torch's in the last digit; scores match CLIPImageProcessor's
to about 1e-3.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError
from .weights import require_weights

__all__ = ["CLIPImageEncoder", "load_clip_encoder", "clip_similarity", "CLIP_MEAN", "CLIP_STD"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIPImageEncoder(nn.Module):
    """``forward(images [B, 3, H, W] in [0, 1]) -> [B, D]`` unit-norm CLIP image embeddings (frozen, eval)."""

    def __init__(self, vision_model: nn.Module, image_size: int):
        super().__init__()
        self.model = vision_model
        self.image_size = int(image_size)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP's resize (shorter side) + centre crop + normalisation: [B, 3, H, W] -> [B, 3, S, S]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got shape {tuple(images.shape)}")
        s = self.image_size
        h, w = images.shape[-2:]
        x = images.to(self.mean.dtype)
        if (h, w) != (s, s):
            scale = s / min(h, w)
            nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
            top, left = (nh - s) // 2, (nw - s) // 2
            x = x[..., top:top + s, left:left + s]
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        emb = self.model(pixel_values=self.preprocess(images)).image_embeds
        return F.normalize(emb.float(), dim=-1)


def load_clip_encoder(path: Optional[str | os.PathLike] = None, weights_folder: Optional[str | os.PathLike] = None,
                      device: Optional[torch.device | str] = None) -> CLIPImageEncoder:
    """The CLIP image encoder from a local transformers folder (``$SS4D_CLIP_MODEL`` or
    ``<weights folder>/clip-vit-base-patch32``); :class:`MissingWeightsError` when absent."""
    folder = require_weights("clip", path, weights_folder)
    from transformers import CLIPVisionModelWithProjection

    try:
        model = CLIPVisionModelWithProjection.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder} is not a transformers CLIP folder ({str(exc).splitlines()[0]})",
                         "pass the folder of openai/clip-vit-base-patch32 (config.json + weights)") from None
    enc = CLIPImageEncoder(model, model.config.image_size)
    return enc.to(device) if device is not None else enc


def clip_similarity(encoder: CLIPImageEncoder, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """CLIP-S per image pair: ``[B, 3, H, W]`` x 2 in [0, 1] -> ``[B]`` cosine similarities (1 = identical)."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction and ground truth differ in shape: {tuple(pred.shape)} vs {tuple(gt.shape)}")
    emb = encoder(torch.cat([pred, gt], 0))
    b = pred.shape[0]
    return (emb[:b] * emb[b:]).sum(-1)

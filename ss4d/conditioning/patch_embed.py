"""A tiny patch-embedding condition encoder: the DINOv2 stand-in of the tiny pipelines.

The SS4D reference fixture (``../shared/ss4d_reference/tiny_pipeline/image_cond_model.safetensors``)
replaces DINOv2 with::

    patches  = Conv2d(3, C, kernel=k, stride=k, bias)(img)        # img [T, 3, 518, 518], ImageNet-normalised
    x_prenorm = cat([prefix_tokens.expand(T, P, C), patches.flatten(2).transpose(1, 2) + pos_embed], 1)
    cond     = layer_norm(x_prenorm) (no affine)                   # [T, P + (518/k)², C]

Keys: ``patch_embed.weight [C, 3, k, k]``, ``patch_embed.bias [C]``, ``prefix_tokens [1, P, C]``,
``pos_embed [1, (518/k)², C]``. :class:`PatchEmbedEncoder` has the same interface as
:class:`~ss4d.conditioning.dinov2.DINOv2Encoder` (``encode``, ``channels``, ``name``, ``.to``), so
the pipeline treats both alike. Our tiny random demo pipeline uses it too (C = 32, k = 74).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Union

import torch
import torch.nn.functional as F
from torch import nn

from .dinov2 import IMAGENET_MEAN, IMAGENET_STD, INPUT_SIZE

__all__ = ["PatchEmbedEncoder", "is_patch_embed_state_dict", "PATCH_EMBED_KEYS"]

PATCH_EMBED_KEYS = ("patch_embed.weight", "patch_embed.bias", "prefix_tokens", "pos_embed")


def is_patch_embed_state_dict(sd: Dict[str, torch.Tensor]) -> bool:
    return set(sd) == set(PATCH_EMBED_KEYS)


class PatchEmbedEncoder(nn.Module):
    """Conv patch embedding + learned prefix tokens + positional embedding (see module docstring)."""

    def __init__(self, channels: int = 32, patch_size: int = 74, num_prefix_tokens: int = 5,
                 image_size: int = INPUT_SIZE, name: str = "patch_embed"):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.name = name
        self.channels = channels
        self.patch_size = patch_size
        self.image_size = image_size
        self.grid_size = image_size // patch_size
        self.num_prefix_tokens = num_prefix_tokens
        self.patch_embed = nn.Conv2d(3, channels, patch_size, stride=patch_size)
        self.prefix_tokens = nn.Parameter(torch.zeros(1, num_prefix_tokens, channels))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size ** 2, channels))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_state_dict(cls, sd: Dict[str, torch.Tensor], name: str = "patch_embed") -> "PatchEmbedEncoder":
        if not is_patch_embed_state_dict(sd):
            raise ValueError(f"not a patch-embed encoder state dict: keys {sorted(sd)}, expected {list(PATCH_EMBED_KEYS)}")
        c, _, k, _ = sd["patch_embed.weight"].shape
        enc = cls(channels=c, patch_size=k, num_prefix_tokens=sd["prefix_tokens"].shape[1],
                  image_size=k * round(sd["pos_embed"].shape[1] ** 0.5), name=name)
        enc.load_state_dict({k_: v.float() for k_, v in sd.items()}, strict=True)
        return enc.eval()

    @classmethod
    def from_file(cls, path: Union[str, Path], name: str = "patch_embed") -> "PatchEmbedEncoder":
        from safetensors.torch import load_file

        return cls.from_state_dict(load_file(str(path)), name=name)

    @classmethod
    def random(cls, channels: int = 32, patch_size: int = 74, num_prefix_tokens: int = 5, seed: int = 0,
               name: str = "patch_embed_random") -> "PatchEmbedEncoder":
        """Seeded random weights (``N(0, 1)/√fan_in`` conv, ``N(0, 1)`` tokens), no global RNG use."""
        enc = cls(channels, patch_size, num_prefix_tokens, name=name)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            w = enc.patch_embed.weight
            w.copy_(torch.randn(w.shape, generator=gen) / (w[0].numel() ** 0.5))
            enc.patch_embed.bias.copy_(0.1 * torch.randn(enc.patch_embed.bias.shape, generator=gen))
            enc.prefix_tokens.copy_(torch.randn(enc.prefix_tokens.shape, generator=gen))
            enc.pos_embed.copy_(0.1 * torch.randn(enc.pos_embed.shape, generator=gen))
        return enc.eval()

    def save(self, path: Union[str, Path]) -> None:
        from safetensors.torch import save_file

        from trellis_ext.atomic import apply_umask

        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, str(path))
        apply_umask(path)  # save_file creates 0600 files

    # ---- encoder interface -------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embed.weight.dtype

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[T, 3, H, W] in [0, 1] -> resized to ``image_size``² (bicubic) and ImageNet-normalised."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [T, 3, H, W], got {tuple(images.shape)}")
        x = images.to(self.device, torch.float32)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False,
                              antialias=True).clamp(0.0, 1.0)
        return ((x - self.mean) / self.std).to(self.dtype)

    @torch.no_grad()
    def prenorm_tokens(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images)
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)
        prefix = self.prefix_tokens.expand(x.shape[0], -1, -1)
        return torch.cat([prefix, patches + self.pos_embed], dim=1).float()

    @torch.no_grad()
    def encode(self, images: torch.Tensor, layer_norm: bool = True) -> torch.Tensor:
        """[T, P + g², C] conditioning tokens (``layer_norm(x_prenorm)`` without affine)."""
        x = self.prenorm_tokens(images)
        return F.layer_norm(x, x.shape[-1:]) if layer_norm else x

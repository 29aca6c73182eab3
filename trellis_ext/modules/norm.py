"""Normalisation layers that compute in fp32 and return the input dtype (TRELLIS's fp16 policy).

* ``LayerNorm32``        -- ``nn.LayerNorm`` over the last dim(s).
* ``GroupNorm32``        -- ``nn.GroupNorm`` over [B, C, ...].
* ``ChannelLayerNorm32`` -- LayerNorm over the channel axis (dim 1) of [B, C, ...] (affine by default);
  the SS VAE's ``norm_type="layer"``.

The affine parameters stay fp32 (they are not touched by ``convert_module_to_f16``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["LayerNorm32", "GroupNorm32", "ChannelLayerNorm32"]


class LayerNorm32(nn.LayerNorm):
    """``nn.LayerNorm`` computed in fp32. Shapes: [..., C] -> [..., C] (input dtype)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class GroupNorm32(nn.GroupNorm):
    """``nn.GroupNorm`` computed in fp32. Shapes: [B, C, ...] -> [B, C, ...] (input dtype)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class ChannelLayerNorm32(LayerNorm32):
    """LayerNorm over the channel axis of [B, C, *spatial], computed in fp32.

    Args:
        normalized_shape: C. Remaining args as ``nn.LayerNorm`` (affine by default).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1).contiguous()

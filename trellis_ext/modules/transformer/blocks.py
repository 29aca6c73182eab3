"""Dense transformer blocks: ``FeedForwardNet``, ``TransformerBlock`` (pre-LN, no modulation).

``TransformerBlock`` keys: ``attn.*`` (``MultiHeadAttention``), ``mlp.mlp.{0,2}``; ``norm1`` / ``norm2``
have weights only with ``ln_affine=True`` (TRELLIS default: no affine, eps 1e-6, fp32 compute).

Extension points: ``_attn_step(x, **kwargs)`` and ``_mlp_step(x, **kwargs)``; extra ``forward`` kwargs
(e.g. ``num_frames``) reach the attention layer.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from ...attention.modules import MultiHeadAttention
from ..norm import LayerNorm32
from .common import LN_EPS, CheckpointMixin, build_mlp

__all__ = ["FeedForwardNet", "TransformerBlock"]


class FeedForwardNet(nn.Module):
    """Two-layer GELU(tanh) MLP. Keys ``mlp.0``, ``mlp.2``. Shapes: [..., C] -> [..., C]."""

    def __init__(self, channels: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.mlp = build_mlp(channels, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class TransformerBlock(CheckpointMixin, nn.Module):
    """x += Attn(norm1(x)); x += MLP(norm2(x)) over dense tokens [B, L, C].

    Args:
        channels, num_heads, mlp_ratio: width, heads, MLP expansion.
        attn_mode, window_size, shift_window, use_rope, qk_rms_norm, qkv_bias: passed to the attention.
        use_checkpoint: activation checkpointing while training.
        ln_affine: affine LayerNorms (TRELLIS: False).
    """

    attention_cls = MultiHeadAttention
    ffn_cls = FeedForwardNet

    def __init__(
        self,
        channels: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        attn_mode: str = "full",
        window_size: Optional[Union[int, Sequence[int]]] = None,
        shift_window: Optional[Union[int, Sequence[int]]] = None,
        use_checkpoint: bool = False,
        use_rope: bool = False,
        qk_rms_norm: bool = False,
        qkv_bias: bool = True,
        ln_affine: bool = False,
    ):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.norm1 = LayerNorm32(channels, elementwise_affine=ln_affine, eps=LN_EPS)
        self.norm2 = LayerNorm32(channels, elementwise_affine=ln_affine, eps=LN_EPS)
        self.attn = self.attention_cls(
            channels, num_heads=num_heads, type="self", attn_mode=attn_mode, window_size=window_size,
            shift_window=shift_window, qkv_bias=qkv_bias, use_rope=use_rope, qk_rms_norm=qk_rms_norm,
        )
        self.mlp = self.ffn_cls(channels, mlp_ratio=mlp_ratio)

    def _attn_step(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return x + self.attn(self.norm1(x), **kwargs)

    def _mlp_step(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return x + self.mlp(self.norm2(x))

    def _forward(self, x, **kwargs):
        x = self._attn_step(x, **kwargs)
        return self._mlp_step(x, **kwargs)

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """x [B, L, C] -> [B, L, C]."""
        return self._run(x, **kwargs)

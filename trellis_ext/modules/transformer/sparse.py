"""Sparse transformer blocks on ``SparseTensor`` voxels (features [N, C], one batch item per layout slice).

* ``SparseFeedForwardNet``  -- keys ``mlp.0``, ``mlp.2`` (nn.Linear applied to the features).
* ``SparseTransformerBlock`` -- x += Attn(norm1(x)); x += MLP(norm2(x)); non-affine LayerNorms (eps 1e-6,
  fp32); keys ``attn.*``, ``mlp.mlp.{0,2}``; ``attn_mode`` ``full`` or ``swin``/``windowed`` with
  ``window_size`` / ``shift_window`` (the SLat VAE blocks).
* ``ModulatedSparseTransformerCrossBlock`` -- the sparse DiT block (keys as the dense one); the [B, 6C]
  modulation is broadcast to the voxels of each batch item.

Extension points are those of the dense blocks (``_attn_step`` / ``_mlp_step``; ``_self_attn_step`` /
``_between_attn_step`` / ``_cross_attn_step`` / ``_mlp_step``) and of ``SparseMultiHeadAttention``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ...attention.modules import SparseMultiHeadAttention
from ...sparse.tensor import SparseTensor, sparse_batch_broadcast
from .blocks import FeedForwardNet, TransformerBlock
from .modulated import ModulatedCrossBlockBase

__all__ = ["SparseFeedForwardNet", "SparseTransformerBlock", "ModulatedSparseTransformerCrossBlock"]


def _feats_op(x: SparseTensor, fn) -> SparseTensor:
    return x.replace(fn(x.feats))


class SparseFeedForwardNet(FeedForwardNet):
    """``FeedForwardNet`` on the voxel features. Keys ``mlp.0``, ``mlp.2``."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        return _feats_op(x, self.mlp)


class SparseTransformerBlock(TransformerBlock):
    """Pre-LN transformer block on a ``SparseTensor`` (args as ``TransformerBlock``).

    forward(x SparseTensor [N, C], **kwargs) -> SparseTensor [N, C] (same coords and cache).
    """

    attention_cls = SparseMultiHeadAttention
    ffn_cls = SparseFeedForwardNet

    def _attn_step(self, x: SparseTensor, **kwargs) -> SparseTensor:
        h = self.attn(_feats_op(x, self.norm1), **kwargs)
        return x.replace(x.feats + h.feats)

    def _mlp_step(self, x: SparseTensor, **kwargs) -> SparseTensor:
        h = self.mlp(_feats_op(x, self.norm2))
        return x.replace(x.feats + h.feats)


class ModulatedSparseTransformerCrossBlock(ModulatedCrossBlockBase):
    """Sparse DiT block (args as ``ModulatedTransformerCrossBlock``).

    forward(x SparseTensor [N, C], mod [B, C] (or [B, 6C] with share_mod), context [B, Lc, Cc] or
    SparseTensor, **kwargs) -> SparseTensor [N, C]. B = x.batch_size (folded b·T + t in 4D).
    """

    attention_cls = SparseMultiHeadAttention
    ffn_cls = SparseFeedForwardNet

    def _norm(self, norm: nn.Module, x: SparseTensor) -> SparseTensor:
        return _feats_op(x, norm)

    def _rows(self, x: SparseTensor, per_item: torch.Tensor) -> torch.Tensor:
        """[B, C] per batch item -> [N, C] per voxel (features' dtype)."""
        return sparse_batch_broadcast(x, per_item.to(x.feats.dtype))

    def _modulate(self, h: SparseTensor, shift: torch.Tensor, scale: torch.Tensor) -> SparseTensor:
        return h.replace(h.feats * (1 + self._rows(h, scale)) + self._rows(h, shift))

    def _gate(self, h: SparseTensor, gate: torch.Tensor) -> SparseTensor:
        return h.replace(h.feats * self._rows(h, gate))

    def _residual(self, x: SparseTensor, h: SparseTensor) -> SparseTensor:
        return x.replace(x.feats + h.feats)

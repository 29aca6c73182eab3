"""Normalisation layers for ``SparseTensor`` (state-dict keys identical to torch's).

* ``SparseLayerNorm``: per voxel over the trailing ``normalized_shape`` dims of feats.
* ``SparseGroupNorm``: per **batch item** — the statistics of a group span all voxels of that
  item and the group's channels (as ``nn.GroupNorm`` on the item's [1, C, N_b] feature map),
  so items never mix.
* ``*32`` variants compute in float32 (also with float32 copies of the affine parameters) and
  cast the result back to the input dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .tensor import SparseTensor

__all__ = ["SparseLayerNorm", "SparseGroupNorm", "SparseLayerNorm32", "SparseGroupNorm32"]


def _f32(p):
    return None if p is None else p.float()


class SparseLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` on feats [N, ..., *normalized_shape]. Keys: ``weight``, ``bias``."""

    def _norm(self, feats: torch.Tensor) -> torch.Tensor:
        return super().forward(feats)

    def forward(self, x):
        if isinstance(x, SparseTensor):
            return x.replace(self._norm(x.feats))
        return self._norm(x)


class SparseLayerNorm32(SparseLayerNorm):
    """``SparseLayerNorm`` computed in float32, result in the input dtype."""

    def _norm(self, feats: torch.Tensor) -> torch.Tensor:
        out = F.layer_norm(feats.float(), self.normalized_shape, _f32(self.weight), _f32(self.bias), self.eps)
        return out.to(feats.dtype)


class SparseGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm(num_groups, num_channels)`` per batch item of a sparse tensor.

    Feats [N, C] (C = num_channels). For each item b (rows ``x.layout[b]``) the result equals
    ``nn.GroupNorm`` applied to that item's features arranged as [1, C, N_b].
    Keys: ``weight``, ``bias`` [C].
    """

    def _group_norm(self, feats: torch.Tensor) -> torch.Tensor:
        """feats [1, C, M] -> normalised [1, C, M]."""
        return F.group_norm(feats, self.num_groups, self.weight, self.bias, self.eps)

    def forward(self, x: SparseTensor) -> SparseTensor:
        if not isinstance(x, SparseTensor):
            raise TypeError("SparseGroupNorm needs a SparseTensor (statistics are per batch item)")
        feats = x.feats
        if feats.dim() != 2 or feats.shape[1] != self.num_channels:
            raise ValueError(f"expected feats [N, {self.num_channels}]; got {tuple(feats.shape)}")
        parts = []
        for sl in x.layout:
            item = feats[sl]
            if item.shape[0] == 0:
                parts.append(item)
                continue
            normed = self._group_norm(item.t().unsqueeze(0))  # [1, C, N_b]
            parts.append(normed.squeeze(0).t())
        out = torch.cat(parts, dim=0) if parts else feats
        return x.replace(out)


class SparseGroupNorm32(SparseGroupNorm):
    """``SparseGroupNorm`` computed in float32, result in the input dtype."""

    def _group_norm(self, feats: torch.Tensor) -> torch.Tensor:
        out = F.group_norm(feats.float(), self.num_groups, _f32(self.weight), _f32(self.bias), self.eps)
        return out.to(feats.dtype)

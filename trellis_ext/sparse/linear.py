"""Per-voxel linear layer on ``SparseTensor.feats``."""
from __future__ import annotations

from typing import Union

import torch
from torch import nn

from .tensor import SparseTensor

__all__ = ["SparseLinear"]


class SparseLinear(nn.Linear):
    """``nn.Linear`` applied to every voxel's features.

    State dict: ``weight`` [out_features, in_features], ``bias`` [out_features] (as nn.Linear).
    Input: ``SparseTensor`` with feats [N, ..., in_features] -> same coords/cache, feats
    [N, ..., out_features]. A plain tensor is accepted too and treated like ``nn.Linear``.
    """

    def forward(self, x: Union[SparseTensor, torch.Tensor]):
        if isinstance(x, SparseTensor):
            return x.replace(super().forward(x.feats))
        return super().forward(x)

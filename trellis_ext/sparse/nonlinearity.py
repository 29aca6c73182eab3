"""Element-wise activations on ``SparseTensor.feats`` (coords, layout and cache are kept)."""
from __future__ import annotations

from typing import Callable, Union

import torch
from torch import nn

from .tensor import SparseTensor

__all__ = ["SparseActivation", "SparseSiLU", "SparseGELU", "SparseReLU"]


def _apply(fn: Callable[[torch.Tensor], torch.Tensor], x):
    return x.replace(fn(x.feats)) if isinstance(x, SparseTensor) else fn(x)


class SparseActivation(nn.Module):
    """Wrap any element-wise ``fn`` (a callable or an ``nn.Module``) for sparse tensors.

    A module ``fn`` is registered as the child ``fn`` (its parameters, if any, appear as
    ``fn.*`` in the state dict).
    """

    def __init__(self, fn: Union[nn.Module, Callable[[torch.Tensor], torch.Tensor]]):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return _apply(self.fn, x)


class SparseSiLU(nn.SiLU):
    """SiLU on feats."""

    def forward(self, x):
        return _apply(super().forward, x)


class SparseGELU(nn.GELU):
    """GELU on feats; ``approximate`` in ``'none' | 'tanh'`` as ``nn.GELU``."""

    def forward(self, x):
        return _apply(super().forward, x)


class SparseReLU(nn.ReLU):
    """ReLU on feats."""

    def forward(self, x):
        return _apply(super().forward, x)

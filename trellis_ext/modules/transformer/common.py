"""Pieces shared by the dense and sparse transformer blocks."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

__all__ = ["LN_EPS", "ADALN_CHUNKS", "CheckpointMixin", "build_mlp"]

#: Epsilon of every block LayerNorm (TRELLIS).
LN_EPS = 1e-6
#: adaLN output chunks: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp.
ADALN_CHUNKS = 6


def build_mlp(channels: int, mlp_ratio: float) -> nn.Sequential:
    """Linear(C -> C·ratio), GELU(tanh), Linear(C·ratio -> C): keys ``0`` and ``2``."""
    hidden = int(channels * mlp_ratio)
    return nn.Sequential(nn.Linear(channels, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, channels))


class CheckpointMixin:
    """``forward`` runs ``_forward`` under activation checkpointing when ``use_checkpoint`` is set, the
    module is training and autograd is on (``torch.utils.checkpoint``, non-reentrant, kwargs allowed)."""

    use_checkpoint: bool = False
    _forward: Callable

    def _run(self, *args, **kwargs):
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, *args, use_reentrant=False, **kwargs)
        return self._forward(*args, **kwargs)

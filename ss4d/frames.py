"""Frames folded into the batch axis — the one place the 4D layout is defined.

Dense tensors: ``[B, T, ...]`` <-> ``[(B·T), ...]`` (row ``b·T + t``: batch-major, frame-minor).
Sparse tensors: coords ``[N, 4]`` int32 as ``(b·T + t, x, y, z)``; rows contiguous per (b, t) entry.
Every 4D module uses these helpers instead of re-deriving the index arithmetic.
"""
from __future__ import annotations

from typing import List, Tuple

import torch

from trellis_ext.sparse import SparseTensor

__all__ = ["fold_frames", "unfold_frames", "folded_index", "split_folded_index", "row_frames", "row_samples",
           "check_folded_batch", "split_sparse_frames", "FrameLayoutError"]


class FrameLayoutError(ValueError):
    """The folded batch does not fit the requested number of frames."""


def check_folded_batch(folded_batch: int, num_frames: int) -> int:
    """Return B for a folded batch of B·T rows; raise a clear error when T does not divide it."""
    if num_frames < 1:
        raise FrameLayoutError(f"num_frames must be >= 1, got {num_frames}")
    if folded_batch % num_frames:
        raise FrameLayoutError(f"a folded batch of {folded_batch} entries is not a whole number of "
                               f"{num_frames}-frame clips")
    return folded_batch // num_frames


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """[B, T, ...] -> [(B·T), ...]."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def unfold_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """[(B·T), ...] -> [B, T, ...]."""
    b = check_folded_batch(x.shape[0], num_frames)
    return x.reshape(b, num_frames, *x.shape[1:])


def folded_index(sample: torch.Tensor, frame: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(b, t) -> b·T + t."""
    return sample * num_frames + frame


def split_folded_index(index: torch.Tensor, num_frames: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """b·T + t -> (b, t)."""
    return index // num_frames, index % num_frames


def row_frames(x: SparseTensor, num_frames: int) -> torch.Tensor:
    """Frame index t of every row of a folded sparse tensor: [N] int64."""
    return x.coords[:, 0].long() % num_frames


def row_samples(x: SparseTensor, num_frames: int) -> torch.Tensor:
    """Sample index b of every row of a folded sparse tensor: [N] int64."""
    return x.coords[:, 0].long() // num_frames


def split_sparse_frames(x: SparseTensor, num_frames: int) -> List[List[torch.Tensor]]:
    """Per sample, per frame: the xyz coords [N_bt, 3] of that frame's voxels."""
    b = check_folded_batch(x.batch_size, num_frames)
    return [[x.coords[x.layout[i * num_frames + t], 1:] for t in range(num_frames)] for i in range(b)]

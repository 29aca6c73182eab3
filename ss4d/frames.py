"""Frames folded into the batch axis — the one place the 4D layout is defined.

Dense tensors: ``[B, T, ...]`` <-> ``[(B·T), ...]`` (row ``b·T + t``: batch-major, frame-minor).
Sparse tensors: coords ``[N, 4]`` int32 as ``(b·T + t, x, y, z)``; rows contiguous per (b, t) entry.
Every 4D module uses these helpers instead of re-deriving the index arithmetic.
"""
from __future__ import annotations

import operator
from typing import List, Optional, Sequence, Tuple, Union

import torch

from trellis_ext.sparse import SparseTensor

__all__ = ["fold_frames", "unfold_frames", "folded_index", "split_folded_index", "row_frames", "row_samples",
           "check_folded_batch", "require_num_frames", "split_sparse_frames", "fold_sparse_frames",
           "unfold_sparse_coords", "slice_frames", "slice_sparse_frames", "FrameLayoutError"]


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


def require_num_frames(num_frames, folded_batch: int, who: str) -> int:
    """Validate the ``num_frames`` a 4D module was given for a folded batch of ``folded_batch`` entries.

    Returns T as a Python int. Raises :class:`FrameLayoutError` when it is missing or does not divide
    the batch, ``TypeError`` when it is not an integer (``bool`` included).
    """
    if num_frames is None:
        raise FrameLayoutError(f"{who} needs the number of frames: call it with num_frames=T "
                               "(frames are folded into the batch axis, see ss4d.frames)")
    if isinstance(num_frames, bool):
        raise TypeError("num_frames must be an int; got bool")
    try:
        num_frames = operator.index(num_frames)
    except TypeError:
        raise TypeError(f"num_frames must be an int; got {type(num_frames).__name__}") from None
    check_folded_batch(folded_batch, num_frames)
    return num_frames


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


def slice_frames(x: torch.Tensor, num_frames: int, start: int, stop: int) -> torch.Tensor:
    """Frames [start, stop) of every sample of a folded dense tensor: [(B·T), ...] -> [(B·T'), ...],
    T' = stop - start."""
    return fold_frames(unfold_frames(x, num_frames)[:, start:stop])


def slice_sparse_frames(x: SparseTensor, num_frames: int, start: int, stop: int
                        ) -> Tuple[SparseTensor, torch.Tensor]:
    """Frames [start, stop) of every sample of a folded sparse tensor, refolded with T' = stop - start
    (coords ``(b·T' + t - start, x, y, z)``, rows in their original order).

    Returns:
        (the sliced SparseTensor, rows [N'] int64: where each of its rows sits in ``x``).
    """
    b = check_folded_batch(x.batch_size, num_frames)
    sample, frame = split_folded_index(x.coords[:, 0].long(), num_frames)
    rows = torch.nonzero((frame >= start) & (frame < stop)).flatten()
    coords = x.coords[rows].clone()
    coords[:, 0] = folded_index(sample[rows], frame[rows] - start, stop - start).to(coords.dtype)
    sliced = SparseTensor(x.feats[rows], coords, shape=(b * (stop - start),) + tuple(x.feats.shape[1:]),
                          scale=x._scale)
    return sliced, rows


ArrayLike = Union[torch.Tensor, "numpy.ndarray"]  # noqa: F821


def fold_sparse_frames(clips: Sequence[Sequence[ArrayLike]], feats: Optional[Sequence[Sequence[ArrayLike]]] = None
                       ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Per-clip, per-frame sparse lists -> one folded sparse batch.

    Args:
        clips: B clips of T frames each; ``clips[b][t]`` the voxel coords [N_bt, 3] (x, y, z) of frame t
            of clip b (torch or numpy, any integer dtype).
        feats: optional matching features ``feats[b][t]`` [N_bt, C] (float32 result).

    Returns:
        coords [N, 4] int32 as (b·T + t, x, y, z), rows contiguous per (b, t) in that order, and the
        features [N, C] concatenated in the same order (None when ``feats`` is None).
    """
    num_frames = {len(c) for c in clips}
    if len(num_frames) > 1:
        raise FrameLayoutError(f"every clip of a folded batch needs the same number of frames; got {sorted(num_frames)}")
    rows = []
    for b, clip in enumerate(clips):
        for t, xyz in enumerate(clip):
            xyz = torch.as_tensor(xyz).to(torch.int32).reshape(-1, 3)
            index = torch.full((xyz.shape[0], 1), folded_index(b, t, len(clip)), dtype=torch.int32)
            rows.append(torch.cat([index, xyz], 1))
    coords = torch.cat(rows) if rows else torch.zeros(0, 4, dtype=torch.int32)
    if feats is None:
        return coords, None
    flat = [torch.as_tensor(f, dtype=torch.float32) for clip in feats for f in clip]
    out = torch.cat(flat)
    if out.shape[0] != coords.shape[0]:
        raise FrameLayoutError(f"{out.shape[0]} feature rows for {coords.shape[0]} voxels")
    return coords, out


def unfold_sparse_coords(coords: torch.Tensor, num_rows: int) -> List[torch.Tensor]:
    """Folded coords [N, 4] (b·T + t, x, y, z) -> per folded row the xyz coords [N_row, 3] (``num_rows`` = B·T)."""
    return [coords[coords[:, 0] == i, 1:].contiguous() for i in range(num_rows)]

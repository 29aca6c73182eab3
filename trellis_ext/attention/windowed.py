"""Window (swin) partitions of sparse coordinates and windowed self-attention on ``SparseTensor``.

``window_partition`` is generic: any number of coordinate columns, one window size and shift per column,
and an explicit group id per row (rows of different groups never share a window). The 3D swin attention
of TRELLIS uses columns (x, y, z) and group = batch index; a 4D decoder can use columns (t, x, y, z)
(or a folded time column) with group = sample index, without touching this file.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch

from ..sparse.conv.functional import encode_keys, per_axis
from ..sparse.tensor import SparseTensor
from .functional import partitioned_attention

__all__ = [
    "window_partition",
    "partition_cache_key",
    "sparse_window_partition",
    "sparse_windowed_self_attention",
    "SPATIAL_DIMS",
]

#: Spatial coordinate columns of a TRELLIS sparse tensor: coords = (batch, x, y, z).
SPATIAL_DIMS = 3

IntOrSeq = Union[int, Sequence[int]]


def window_partition(
    coords: torch.Tensor,
    window_size: Sequence[int],
    shift: Sequence[int],
    group: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, List[int]]:
    """Partition rows into windows: window index per column = floor((coord + shift) / size).

    Two rows share a window iff they have the same group id and the same window index in every column.
    Rows are ordered by window -- windows sorted lexicographically by (group, w_0, w_1, ...) -- and keep
    their original relative order inside a window (stable sort). Empty windows do not appear.

    Args:
        coords: [N, D] integer coordinates (any int dtype; may be negative).
        window_size: D positive window sizes (an int is broadcast to every column).
        shift: D shifts added to the coordinates before the division (an int is broadcast).
        group: optional [N] integer group ids (e.g. batch index); ``None`` = one group.

    Returns:
        fwd_perm: [N] long, ``rows[fwd_perm]`` lists the windows end to end.
        bwd_perm: [N] long, the inverse permutation (``x[fwd_perm][bwd_perm] == x``).
        seqlens: python list with the number of rows of each non-empty window, in window order.
    """
    if coords.dim() != 2:
        raise ValueError(f"coords must be [N, D]; got {tuple(coords.shape)}")
    n, ncols = coords.shape
    sizes = per_axis(window_size, ncols, "window_size")
    shifts = per_axis(shift, ncols, "shift")
    if any(s <= 0 for s in sizes):
        raise ValueError(f"window sizes must be positive; got {sizes}")
    device = coords.device
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty, []
    c = coords.long() + torch.tensor(shifts, dtype=torch.long, device=device)
    win = torch.div(c, torch.tensor(sizes, dtype=torch.long, device=device), rounding_mode="floor")
    if group is not None:
        if group.shape != (n,):
            raise ValueError(f"group must be [N] = [{n}]; got {tuple(group.shape)}")
        win = torch.cat([group.to(device=device, dtype=torch.long)[:, None], win], dim=1)
    win_id, _ = encode_keys(win)  # order-preserving: lexicographic in (group, w_0, ..., w_{D-1})
    sorted_id, fwd_perm = torch.sort(win_id, stable=True)
    bwd_perm = torch.empty_like(fwd_perm)
    bwd_perm[fwd_perm] = torch.arange(n, device=device)
    seqlens = torch.unique_consecutive(sorted_id, return_counts=True)[1].tolist()
    return fwd_perm, bwd_perm, seqlens


def partition_cache_key(window_size: IntOrSeq, shift: IntOrSeq, prefix: str = "window_partition") -> str:
    """Spatial-cache key of a partition, e.g. ``window_partition_8_4`` (tuples when not uniform)."""

    def fmt(v: IntOrSeq) -> str:
        if isinstance(v, int):
            return str(v)
        v = tuple(int(x) for x in v)
        return str(v[0]) if len(set(v)) == 1 else "x".join(str(x) for x in v)

    return f"{prefix}_{fmt(window_size)}_{fmt(shift)}"


def sparse_window_partition(x: SparseTensor, window_size: IntOrSeq, shift: IntOrSeq = 0
                            ) -> Tuple[torch.Tensor, torch.Tensor, List[int]]:
    """TRELLIS 3D swin partition of a sparse tensor, cached on its spatial cache.

    Windows are ``window_size``³ cubes of (x, y, z) shifted by ``shift``; windows never span two batch
    items (group = coords[:, 0]).

    Returns:
        (fwd_perm [N], bwd_perm [N], seqlens) as ``window_partition``.
    """
    sizes = per_axis(window_size, SPATIAL_DIMS, "window_size")
    shifts = per_axis(shift, SPATIAL_DIMS, "shift")
    key = partition_cache_key(sizes, shifts)
    cached = x.get_spatial_cache(key)
    if cached is None:
        cached = window_partition(x.coords[:, 1:], sizes, shifts, group=x.coords[:, 0])
        x.register_spatial_cache(key, cached)
    return cached


def sparse_windowed_self_attention(qkv: SparseTensor, window_size: IntOrSeq, shift: IntOrSeq = 0,
                                   scale: Optional[float] = None, backend: Optional[str] = None) -> SparseTensor:
    """Swin self-attention: every voxel attends to the voxels of its (shifted) window in its batch item.

    No cyclic roll, no padding, no relative position bias: each non-empty window is one varlen sequence.

    Args:
        qkv: SparseTensor with feats [N, 3, H, D] (q, k, v stacked on dim 1).
        window_size: window edge (int) or (wx, wy, wz).
        shift: offset added to x, y, z before windowing (int or 3-tuple).
        scale: score scale, default 1/√D.
        backend: explicit attention backend (default: ``ATTN_BACKEND`` / auto).

    Returns:
        SparseTensor with feats [N, H, D], same coords / cache as ``qkv``.
    """
    feats = qkv.feats
    if feats.dim() != 4 or feats.shape[1] != 3:
        raise ValueError(f"qkv feats must be [N, 3, H, D]; got {tuple(feats.shape)}")
    fwd, bwd, seqlens = sparse_window_partition(qkv, window_size, shift)
    q, k, v = feats.unbind(1)
    return qkv.replace(partitioned_attention(q, k, v, fwd, bwd, seqlens, scale=scale, backend=backend))

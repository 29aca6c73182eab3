"""The sparse voxel tensor shared by every sparse model.

Layout (TRELLIS-compatible):
    feats:  [N, C, ...] float, one row per active voxel.
    coords: [N, 4] int32 as (batch, x, y, z). Rows of one batch item are contiguous and items
            appear in increasing batch order. In the 4D models the batch column holds the folded
            index b*T + t (see ``ss4d.frames``).

A tensor carries a *scale* (its stride relative to the finest grid it came from) and a
per-scale *spatial cache*: neighbour maps, window partitions and the up/down-sampling maps
that a later ``SparseUpsample`` needs. ``replace(feats)`` keeps coords, scale and cache.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

__all__ = ["SparseTensor", "sparse_cat", "sparse_unbind", "sparse_batch_broadcast"]


class SparseTensor:
    """Sparse voxel features with (batch, x, y, z) int32 coordinates.

    Args:
        feats: [N, C, ...] features.
        coords: [N, 4] integer coordinates (cast to int32), batch items contiguous.
        shape: optional full shape ``[B, C, ...]``; inferred from coords when omitted.
        layout: optional list of per-batch ``slice``s into the rows; inferred when omitted.
        scale: stride of this tensor relative to the finest grid, one int per spatial axis.
        spatial_cache: dict shared with tensors of the same coords (internal).
    """

    def __init__(
        self,
        feats: torch.Tensor,
        coords: torch.Tensor,
        shape: Optional[Sequence[int]] = None,
        layout: Optional[List[slice]] = None,
        scale: Tuple[int, ...] = (1, 1, 1),
        spatial_cache: Optional[Dict[str, Dict[str, Any]]] = None,
    ):
        if coords.dim() != 2 or coords.shape[1] != 4:
            raise ValueError(f"coords must be [N, 4] (batch, x, y, z); got {tuple(coords.shape)}")
        if feats.shape[0] != coords.shape[0]:
            raise ValueError(
                f"feats and coords disagree on the number of voxels: {feats.shape[0]} vs {coords.shape[0]}"
            )
        if coords.dtype != torch.int32:
            coords = coords.to(torch.int32)
        self.feats = feats
        self.coords = coords
        if layout is None:
            layout = self._compute_layout(coords, None if shape is None else int(shape[0]))
        self._layout = layout
        if shape is None:
            shape = (len(layout),) + tuple(feats.shape[1:])
        self._shape = torch.Size(shape)
        self._scale = tuple(int(s) for s in scale)
        self._spatial_cache = spatial_cache if spatial_cache is not None else {}

    # ------------------------------------------------------------------ layout / shape
    @staticmethod
    def _compute_layout(coords: torch.Tensor, batch_size: Optional[int] = None) -> List[slice]:
        if coords.shape[0] == 0:
            return [slice(0, 0) for _ in range(batch_size or 0)]
        batch = coords[:, 0].long()
        if batch_size is None:
            batch_size = int(batch.max().item()) + 1
        counts = torch.bincount(batch, minlength=batch_size).tolist()
        layout, start = [], 0
        for c in counts:
            layout.append(slice(start, start + c))
            start += c
        return layout

    @property
    def layout(self) -> List[slice]:
        """Per-batch-item row slices (batch items are contiguous)."""
        return self._layout

    @property
    def shape(self) -> torch.Size:
        """[B, C, ...]: batch size then the per-voxel feature shape."""
        return self._shape

    @property
    def batch_size(self) -> int:
        return self._shape[0]

    @property
    def seqlens(self) -> List[int]:
        """Number of voxels per batch item."""
        return [s.stop - s.start for s in self._layout]

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    def dim(self) -> int:
        return len(self._shape)

    def __len__(self) -> int:
        return self.batch_size

    def __repr__(self) -> str:
        return (
            f"SparseTensor(shape={list(self.shape)}, voxels={self.feats.shape[0]}, "
            f"scale={self._scale}, dtype={self.dtype}, device={self.device})"
        )

    # ------------------------------------------------------------------ cache
    def register_spatial_cache(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` for this tensor's scale (shared by ``replace``)."""
        self._spatial_cache.setdefault(str(self._scale), {})[key] = value

    def get_spatial_cache(self, key: Optional[str] = None) -> Any:
        cache = self._spatial_cache.get(str(self._scale), {})
        return cache if key is None else cache.get(key)

    # ------------------------------------------------------------------ construction
    def replace(self, feats: torch.Tensor, coords: Optional[torch.Tensor] = None) -> "SparseTensor":
        """A new tensor with ``feats`` (and optionally new ``coords`` of the same rows).

        With the same coords the layout, scale and spatial cache are shared.
        """
        if feats.shape[0] != self.feats.shape[0]:
            raise ValueError("replace() keeps the rows; use SparseTensor(...) for a new voxel set")
        return SparseTensor(
            feats,
            self.coords if coords is None else coords,
            shape=(self.batch_size,) + tuple(feats.shape[1:]),
            layout=self._layout,
            scale=self._scale,
            spatial_cache=self._spatial_cache,
        )

    def to(self, *args, **kwargs) -> "SparseTensor":
        """Like ``Tensor.to`` for feats; coords follow a device change and stay int32."""
        feats = self.feats.to(*args, **kwargs)
        coords = self.coords.to(feats.device) if feats.device != self.coords.device else self.coords
        cache = self._spatial_cache if coords is self.coords else {}
        return SparseTensor(feats, coords, shape=(self.batch_size,) + tuple(feats.shape[1:]),
                            layout=self._layout, scale=self._scale, spatial_cache=cache)

    def type(self, dtype: torch.dtype) -> "SparseTensor":
        return self.replace(self.feats.type(dtype))

    def float(self) -> "SparseTensor":
        return self.type(torch.float32)

    def half(self) -> "SparseTensor":
        return self.type(torch.float16)

    def detach(self) -> "SparseTensor":
        return self.replace(self.feats.detach())

    def reshape(self, *shape) -> "SparseTensor":
        """Reshape the per-voxel feature dims (the row dim is kept)."""
        return self.replace(self.feats.reshape(self.feats.shape[0], *shape))

    def __getitem__(self, idx: int) -> "SparseTensor":
        """Batch item ``idx`` as a batch-1 tensor (batch column reset to 0)."""
        if not isinstance(idx, int):
            raise TypeError("SparseTensor indexing takes a batch index (int)")
        if idx < 0:
            idx += self.batch_size
        sl = self._layout[idx]
        coords = self.coords[sl].clone()
        coords[:, 0] = 0
        return SparseTensor(self.feats[sl], coords, scale=self._scale)

    def dense(self, spatial_shape: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Scatter into a dense [B, C, X, Y, Z] tensor (features must be [N, C])."""
        if spatial_shape is None:
            spatial_shape = (self.coords[:, 1:].max(0).values + 1).tolist()
        out = self.feats.new_zeros((self.batch_size, self.feats.shape[1], *spatial_shape))
        c = self.coords.long()
        out[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]] = self.feats
        return out

    @staticmethod
    def from_dense(x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> "SparseTensor":
        """Active sites of a dense [B, C, X, Y, Z] tensor (``mask`` [B, X, Y, Z], default any != 0)."""
        if mask is None:
            mask = (x != 0).any(1)
        idx = torch.nonzero(mask)
        feats = x[idx[:, 0], :, idx[:, 1], idx[:, 2], idx[:, 3]]
        return SparseTensor(feats, idx.int(), shape=(x.shape[0], x.shape[1]))

    # ------------------------------------------------------------------ arithmetic
    def _binary(self, other: Union["SparseTensor", torch.Tensor, float], op) -> "SparseTensor":
        """Elementwise op with another sparse tensor (same rows), a per-item tensor [B, ...]
        (broadcast over each item's voxels), a per-row tensor [N, ...] or a scalar."""
        if isinstance(other, SparseTensor):
            other = other.feats
        elif isinstance(other, torch.Tensor) and other.dim() > 0 and other.shape[0] == self.batch_size:
            other = sparse_batch_broadcast(self, other)
        return self.replace(op(self.feats, other))

    def __neg__(self):
        return self.replace(-self.feats)

    def __add__(self, other):
        return self._binary(other, torch.add)

    __radd__ = __add__

    def __sub__(self, other):
        return self._binary(other, torch.sub)

    def __rsub__(self, other):
        return self._binary(other, lambda a, b: torch.sub(b, a))

    def __mul__(self, other):
        return self._binary(other, torch.mul)

    __rmul__ = __mul__

    def __truediv__(self, other):
        return self._binary(other, torch.div)


def sparse_batch_broadcast(x: SparseTensor, values: torch.Tensor) -> torch.Tensor:
    """Expand per-item ``values`` [B, ...] to per-voxel rows [N, ...] following ``x.layout``."""
    seqlens = x.seqlens
    counts = torch.tensor(seqlens, device=values.device)
    # output_size spares CUDA a device-to-host sync to size the result
    return torch.repeat_interleave(values, counts, dim=0, output_size=sum(seqlens))


def sparse_cat(inputs: List[SparseTensor], dim: int = 0) -> SparseTensor:
    """Concatenate sparse tensors.

    dim=0: stack batches (batch indices of later inputs are offset).
    dim>=1: concatenate features of tensors with identical coords (shares the first input's cache).
    """
    if dim == 0:
        feats, coords, offset = [], [], 0
        for x in inputs:
            c = x.coords.clone()
            c[:, 0] += offset
            offset += x.batch_size
            coords.append(c)
            feats.append(x.feats)
        return SparseTensor(torch.cat(feats, 0), torch.cat(coords, 0),
                            shape=(offset,) + tuple(inputs[0].feats.shape[1:]), scale=inputs[0]._scale)
    return inputs[0].replace(torch.cat([x.feats for x in inputs], dim=dim))


def sparse_unbind(x: SparseTensor, dim: int = 0) -> List[SparseTensor]:
    """Split into per-batch-item tensors (dim=0) or along a feature dim."""
    if dim == 0:
        return [x[i] for i in range(x.batch_size)]
    return [x.replace(f) for f in x.feats.unbind(dim)]

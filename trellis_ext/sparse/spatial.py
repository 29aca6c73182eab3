"""Resolution changes of sparse voxel tensors (TRELLIS semantics).

* :class:`SparseDownsample` (``factor``): coords (x, y, z) floor-divided by the factor (batch
  column kept), de-duplicated and sorted by (batch, x, y, z); features mean-pooled over the
  children of each coarse voxel. Scale x factor. Caches the map back to the fine voxels, and its
  pooling groups on the input's voxel set (:func:`cached_pool_structure`: built once per voxel set).
* :class:`SparseUpsample` (``factor``): inverse of a paired downsample: every original fine
  voxel (original coords, row order, layout, scale) gets its coarse voxel's feature. Without a
  paired downsample it raises.
* :class:`SparseSubdivide`: each voxel -> its 8 children ``2 * coords + {0,1}^3`` in
  ``torch.nonzero(torch.ones(2, 2, 2))`` order (parent-major), features copied.

Mean-pool semantics (``mean_mode``):
    TRELLIS pools with ``torch.scatter_reduce(zeros, 0, index, feats, reduce="mean")`` and
    the default ``include_self=True``, so the zero that the output starts from counts as one
    more element: a coarse voxel with n children gets ``sum / (n + 1)``. That is
    ``mean_mode="trellis"``, the default, needed to reproduce checkpoints trained with it.
    ``mean_mode="exact"`` gives the true mean ``sum / n``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .conv.backends import coords_cache_get, coords_cache_put
from .conv.functional import HALF_DTYPES, decode_keys, encode_keys, per_axis
from .tensor import SparseTensor

__all__ = ["SparseDownsample", "SparseUpsample", "SparseSubdivide", "MEAN_MODES", "upsample_cache_key",
           "PoolStructure", "pool_structure", "pool_feats", "cached_pool_structure"]

SPATIAL_DIMS = 3
MEAN_MODES = ("trellis", "exact")
SUBDIVIDE_FACTOR = 2

IntOr3 = Union[int, Sequence[int]]


def _triple(v: IntOr3) -> Tuple[int, int, int]:
    t = per_axis(v, SPATIAL_DIMS, "factor")
    if any(i < 1 for i in t):
        raise ValueError(f"factor must be a positive int or {SPATIAL_DIMS} positive ints; got {v}")
    return t  # type: ignore[return-value]


def upsample_cache_key(factor: Tuple[int, int, int]) -> str:
    """Spatial-cache key (at the coarse scale) of the map a ``SparseUpsample(factor)`` needs."""
    return f"upsample_{tuple(factor)}"


@dataclass
class PoolStructure:
    """Which input rows merge into which output row: everything of a pooling that depends on the coords only.

    Attributes:
        coords: unique output keys [M, 4] int32, sorted lexicographically.
        idx: [N] int64, the output row of each input row. counts: [M] int64, input rows per output row.
        layout: per-batch slices of the output rows (``None`` until the caller sets it).
        cache: the spatial-cache dict the pooled tensor uses (``None``: the caller decides).
    """

    coords: torch.Tensor
    idx: torch.Tensor
    counts: torch.Tensor
    layout: Optional[List[slice]] = None
    cache: Optional[Dict] = None


def pool_structure(keys: torch.Tensor) -> PoolStructure:
    """Group the rows of integer ``keys`` [N, D] by value."""
    codes, spec = encode_keys(keys)
    uniq, idx, counts = torch.unique(codes, sorted=True, return_inverse=True, return_counts=True)
    return PoolStructure(coords=decode_keys(uniq, spec).to(torch.int32), idx=idx, counts=counts)


def pool_feats(feats: torch.Tensor, structure: PoolStructure, mean_mode: str = "trellis") -> torch.Tensor:
    """Average ``feats`` [N, ...] over the rows ``structure`` merges -> [M, ...]. ``mean_mode="trellis"``
    divides the sum by count + 1 (what ``torch.scatter_reduce(zeros, ..., "mean")`` with
    ``include_self=True`` computes, and so what TRELLIS / SS4D checkpoints were trained with); ``"exact"``
    divides by the count. Accumulates half-precision inputs in fp32."""
    acc_dtype = torch.float32 if feats.dtype in HALF_DTYPES else feats.dtype
    sums = feats.new_zeros((structure.coords.shape[0],) + tuple(feats.shape[1:]), dtype=acc_dtype)
    sums = sums.index_add(0, structure.idx, feats.to(acc_dtype))
    denom = structure.counts + 1 if mean_mode == "trellis" else structure.counts
    denom = denom.to(acc_dtype).reshape((-1,) + (1,) * (feats.dim() - 1))
    return (sums / denom).to(feats.dtype)


def cached_pool_structure(x: SparseTensor, cache_key: str, keys_fn: Callable[[torch.Tensor], torch.Tensor],
                          batch_size: int) -> PoolStructure:
    """The :class:`PoolStructure` of ``keys_fn(x.coords)``, kept in ``x``'s spatial cache under ``cache_key``.

    A sampler calls a flow on the same voxels at every step (``replace`` keeps the coords object and the
    cache), so the grouping, the output layout and the output tensor's own cache are computed once per
    voxel set: later calls launch no sort and read nothing back to the host, and the pooled tensor's
    neighbour maps / window partitions are found again in its cache.
    """
    structure = coords_cache_get(x, cache_key)
    if structure is None:
        structure = pool_structure(keys_fn(x.coords.long()))
        structure.layout = SparseTensor._compute_layout(structure.coords, batch_size)
        coords_cache_put(x, cache_key, structure)
    return structure


class SparseDownsample(nn.Module):
    """Mean-pool a sparse tensor onto a ``factor``-times coarser grid.

    Args:
        factor: int or (fx, fy, fz).
        mean_mode: ``"trellis"`` (sum / (n + 1), default, see module doc) or ``"exact"`` (sum / n).

    Input feats [N, ...] -> output feats [M, ...] (M coarse voxels sorted by (batch, x, y, z)),
    coords [M, 4] int32, scale = input scale * factor, same batch size. The output shares the
    input's spatial cache dict and registers under ``upsample_cache_key(factor)`` a dict with
    the fine ``coords`` [N, 4], ``layout``, ``shape``, ``scale``, ``idx`` [N] (coarse row of
    each fine row) and ``num_coarse`` (M).
    Features are accumulated in float32 for fp16/bf16 inputs and cast back.
    """

    def __init__(self, factor: IntOr3 = 2, mean_mode: str = "trellis"):
        super().__init__()
        if mean_mode not in MEAN_MODES:
            raise ValueError(f"mean_mode must be one of {MEAN_MODES}; got {mean_mode!r}")
        self.factor = _triple(factor)
        self.mean_mode = mean_mode

    def forward(self, x: SparseTensor) -> SparseTensor:
        factor = (1,) + self.factor                      # the batch column is divided by 1

        def coarse(coords: torch.Tensor) -> torch.Tensor:
            return torch.div(coords, torch.tensor(factor, dtype=torch.long, device=coords.device),
                             rounding_mode="floor")

        structure = cached_pool_structure(x, f"downsample_{self.factor}", coarse, x.batch_size)
        new_coords, idx = structure.coords, structure.idx
        new_feats = pool_feats(x.feats, structure, self.mean_mode)

        out = SparseTensor(
            new_feats,
            new_coords,
            shape=x.shape,
            layout=structure.layout,
            scale=tuple(s * f for s, f in zip(x._scale, self.factor)),
            spatial_cache=x._spatial_cache,
        )
        out.register_spatial_cache(
            upsample_cache_key(self.factor),
            {"coords": x.coords, "layout": x.layout, "shape": x.shape, "scale": x._scale, "idx": idx,
             "num_coarse": new_coords.shape[0]},
        )
        return out

    def extra_repr(self) -> str:
        return f"factor={self.factor}, mean_mode={self.mean_mode!r}"


class SparseUpsample(nn.Module):
    """Undo a paired ``SparseDownsample(factor)`` by nearest-neighbour copy.

    Input: a tensor whose coords are those produced by ``SparseDownsample(factor)`` (feats may
    have been replaced, e.g. by ``x.replace(...)`` or ops that keep the cache) with feats
    [M, ...]. Output: the pre-downsample coords, row order, layout and scale, feats
    ``x.feats[idx]`` [N, ...]. Shares the spatial cache, so the fine scale's neighbour maps are
    reused.

    Raises:
        RuntimeError: if ``x`` carries no map from a paired ``SparseDownsample(factor)``.
    """

    def __init__(self, factor: IntOr3 = 2):
        super().__init__()
        self.factor = _triple(factor)

    def forward(self, x: SparseTensor) -> SparseTensor:
        cached = x.get_spatial_cache(upsample_cache_key(self.factor))
        if cached is None:
            raise RuntimeError(
                f"SparseUpsample(factor={self.factor}) needs a tensor produced by a paired "
                f"SparseDownsample(factor={self.factor}) (no cached map at scale {x._scale}); "
                "upsampling an arbitrary sparse tensor is not defined"
            )
        idx, n_coarse = cached["idx"], cached["num_coarse"]
        if n_coarse != x.feats.shape[0]:
            raise RuntimeError(
                f"SparseUpsample: the cached downsample map has {n_coarse} coarse voxels but the "
                f"input has {x.feats.shape[0]}; the input is not the paired downsample's output"
            )
        feats = x.feats.index_select(0, idx.to(x.feats.device))
        return SparseTensor(
            feats,
            cached["coords"],
            shape=(cached["shape"][0],) + tuple(feats.shape[1:]),
            layout=cached["layout"],
            scale=cached["scale"],
            spatial_cache=x._spatial_cache,
        )

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class SparseSubdivide(nn.Module):
    """Split every voxel into its 2x2x2 children on a 2x finer grid.

    Output row ``8 * i + j`` is child j of input voxel i: coords
    ``(b, 2x + cx, 2y + cy, 2z + cz)`` with (cx, cy, cz) = ``torch.nonzero(torch.ones(2, 2, 2))[j]``
    and the parent's feats. Layout: each item's slice times 8. The result has a fresh spatial
    cache (new voxel set); its scale is the input scale halved (scales are integers, so a
    scale-1 input gives scale 1: the result is the new finest grid).
    """

    def forward(self, x: SparseTensor) -> SparseTensor:
        n_children = SUBDIVIDE_FACTOR ** SPATIAL_DIMS
        child = torch.nonzero(torch.ones((SUBDIVIDE_FACTOR,) * SPATIAL_DIMS, device=x.coords.device))
        child = torch.cat([child.new_zeros(n_children, 1), child], dim=1).to(torch.int32)  # [8, 4]
        parent = x.coords.clone()
        parent[:, 1:] *= SUBDIVIDE_FACTOR
        coords = (parent.unsqueeze(1) + child.unsqueeze(0)).reshape(-1, 1 + SPATIAL_DIMS)
        feats = x.feats.unsqueeze(1).expand(x.feats.shape[0], n_children, *x.feats.shape[1:])
        feats = feats.reshape(-1, *x.feats.shape[1:])
        layout = [slice(sl.start * n_children, sl.stop * n_children) for sl in x.layout]
        scale = tuple(max(s // SUBDIVIDE_FACTOR, 1) for s in x._scale)
        return SparseTensor(feats, coords, shape=x.shape, layout=layout, scale=scale)

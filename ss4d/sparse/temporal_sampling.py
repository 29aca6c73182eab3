"""Temporal pair merge and copy-back of folded sparse tensors (SS4D's ``SparseDownsample_t`` / ``_t``).

* :class:`SparseDownsampleTemporal` -- frames ``2k`` and ``2k+1`` of a sample become packed frame
  ``k``: the new folded index is ``(b·T + t) // 2 = b·(T/2) + t // 2`` (pairs never straddle two
  samples because T is even), xyz is kept, the active set is the **union** of the two frames'
  voxels (unique rows, sorted by ``(b·T/2 + k, x, y, z)``) and a voxel's features are the mean of
  its one or two source rows.
* :class:`SparseUpsampleTemporal` -- copies every packed voxel's features back to each original
  (frame, voxel) row through the inverse index cached by the paired downsample, restoring the
  original coords, row order, layout, scale and spatial cache exactly.

Mean semantics (``mean_mode``), as for trellis_ext's spatial ``SparseDownsample``:

* ``"trellis"`` (default, what the released SS4D weights were trained with): the official code pools
  with ``scatter_reduce(zeros, reduce="mean")`` whose ``include_self=True`` counts the initial zero,
  so a voxel with n source rows gets ``sum / (n + 1)``: (a + b) / 3 when present in both frames,
  a / 2 when present in one.
* ``"exact"``: the true mean ``sum / n`` ((a + b) / 2, or a).

Valid frame counts: **T must be even** (T = 2, 4, 6, ...); an odd T raises
:class:`ss4d.frames.FrameLayoutError`.

Cache layout: the packed tensor has its *own* spatial cache (its voxel set differs from the
input's at the same spatial scale, so neighbour maps / window partitions must not be shared). It
stores under :data:`UPSAMPLE_T_CACHE_KEY` the original coords, layout, shape, scale, the inverse
index [N], the packed voxel count and the original tensor's cache dict, which the paired upsample
hands back.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ss4d.frames import FrameLayoutError, check_folded_batch
from trellis_ext.sparse import SparseTensor
from trellis_ext.sparse.spatial import MEAN_MODES, cached_pool_structure, pool_feats

__all__ = ["TEMPORAL_FACTOR", "MEAN_MODES", "UPSAMPLE_T_CACHE_KEY", "check_even_frames",
           "SparseDownsampleTemporal", "SparseUpsampleTemporal"]

TEMPORAL_FACTOR = 2
"""Frames merged into one packed frame (SS4D supports exactly 2)."""
UPSAMPLE_T_CACHE_KEY = f"upsample_t_{TEMPORAL_FACTOR}"


def check_even_frames(num_frames: int, what: str = "the temporal pair merge") -> int:
    """Return T if it is a positive even int; otherwise raise a clear :class:`FrameLayoutError`."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int):
        raise TypeError(f"num_frames must be an int; got {type(num_frames).__name__}")
    if num_frames < TEMPORAL_FACTOR or num_frames % TEMPORAL_FACTOR:
        raise FrameLayoutError(
            f"{what} merges frames {TEMPORAL_FACTOR}k and {TEMPORAL_FACTOR}k+1, so the number of frames "
            f"must be even (valid T: 2, 4, 6, ...); got T={num_frames}")
    return num_frames


class SparseDownsampleTemporal(nn.Module):
    """Merge frame pairs of a folded sparse tensor (T -> T/2), mean-pooling shared voxels.

    Args:
        factor: frames per packed frame; only 2 is supported.
        mean_mode: ``"trellis"`` (sum / (n + 1), official) or ``"exact"`` (sum / n); see module doc.

    forward(x, num_frames=None):
        x: SparseTensor feats [N, ...], coords [N, 4] int32 as (b·T + t, x, y, z), batch size B·T.
        num_frames: T, checked to be even and to divide the batch; ``None`` only checks that the
            folded batch size is even (pairs are then formed on the folded index).
        Returns a SparseTensor with feats [M, ...], coords [M, 4] as (b·T/2 + k, x, y, z) sorted
        by that key, batch size B·T/2, the input's scale and its own spatial cache (new for a new voxel
        set; the same one again when called on the same voxels, e.g. at every sampler step).
    """

    def __init__(self, factor: int = TEMPORAL_FACTOR, mean_mode: str = "trellis"):
        super().__init__()
        if factor != TEMPORAL_FACTOR:
            raise NotImplementedError(f"only a temporal factor of {TEMPORAL_FACTOR} is supported; got {factor}")
        if mean_mode not in MEAN_MODES:
            raise ValueError(f"mean_mode must be one of {MEAN_MODES}; got {mean_mode!r}")
        self.factor = factor
        self.mean_mode = mean_mode

    def forward(self, x: SparseTensor, num_frames: Optional[int] = None) -> SparseTensor:
        if num_frames is not None:
            check_even_frames(num_frames)
            check_folded_batch(x.batch_size, num_frames)
        elif x.batch_size % self.factor:
            raise FrameLayoutError(f"a folded batch of {x.batch_size} entries cannot be split into frame "
                                   f"pairs; the number of frames must be even (valid T: 2, 4, 6, ...)")
        def packed(coords: torch.Tensor) -> torch.Tensor:
            return torch.cat([torch.div(coords[:, :1], self.factor, rounding_mode="floor"), coords[:, 1:]], 1)

        structure = cached_pool_structure(x, f"downsample_t_{self.factor}", packed, x.batch_size // self.factor)
        if structure.cache is None:
            structure.cache = {}        # the packed voxel set's own cache, the same at every call on these voxels
        new_coords, idx = structure.coords, structure.idx
        new_feats = pool_feats(x.feats, structure, self.mean_mode)
        out = SparseTensor(new_feats, new_coords, shape=(x.batch_size // self.factor,) + tuple(new_feats.shape[1:]),
                           layout=structure.layout, scale=x._scale, spatial_cache=structure.cache)
        out.register_spatial_cache(UPSAMPLE_T_CACHE_KEY, {
            "coords": x.coords, "layout": x.layout, "shape": x.shape, "scale": x._scale, "idx": idx,
            "packed": new_coords.shape[0], "cache": x._spatial_cache,
        })
        return out

    def extra_repr(self) -> str:
        return f"factor={self.factor}, mean_mode={self.mean_mode!r}"


class SparseUpsampleTemporal(nn.Module):
    """Undo a paired :class:`SparseDownsampleTemporal` by copying packed features back (T/2 -> T).

    forward(x, num_frames=None): ``x`` must carry the paired downsample's cache (its output, or a
    tensor derived from it with ``replace``), feats [M, ...]. Returns feats ``x.feats[idx]`` [N, ...]
    on the original coords, row order, layout, scale and spatial cache. ``num_frames`` is accepted
    for a uniform call signature and, if given, checked against the restored batch.

    Raises:
        RuntimeError: without a paired downsample's map, or if the voxel count does not match it.
    """

    def __init__(self, factor: int = TEMPORAL_FACTOR):
        super().__init__()
        if factor != TEMPORAL_FACTOR:
            raise NotImplementedError(f"only a temporal factor of {TEMPORAL_FACTOR} is supported; got {factor}")
        self.factor = factor

    def forward(self, x: SparseTensor, num_frames: Optional[int] = None) -> SparseTensor:
        cached = x.get_spatial_cache(UPSAMPLE_T_CACHE_KEY)
        if cached is None:
            raise RuntimeError(
                "SparseUpsampleTemporal needs a tensor produced by a paired SparseDownsampleTemporal (no "
                f"cached '{UPSAMPLE_T_CACHE_KEY}' map); copying frames back is undefined otherwise")
        if cached["packed"] != x.feats.shape[0]:
            raise RuntimeError(f"SparseUpsampleTemporal: the paired downsample produced {cached['packed']} "
                               f"voxels but the input has {x.feats.shape[0]}")
        if num_frames is not None:
            check_folded_batch(cached["shape"][0], num_frames)
        feats = x.feats.index_select(0, cached["idx"].to(x.feats.device))
        return SparseTensor(feats, cached["coords"], shape=(cached["shape"][0],) + tuple(feats.shape[1:]),
                            layout=cached["layout"], scale=cached["scale"], spatial_cache=cached["cache"])

    def extra_repr(self) -> str:
        return f"factor={self.factor}"

"""Submanifold sparse convolution.

* :class:`SparseConv3d` — the TRELLIS-compatible module (``conv.weight`` [out, kx, ky, kz, in]).
* :func:`subm_conv3d` — the same op as a function of a ``SparseTensor`` and a weight.
* Backends ``torch`` (exact, any device) and ``spconv`` (CUDA), chosen per call by
  :func:`select_backend` (``SPARSE_CONV_BACKEND=auto|torch|spconv``).
* Generic N-D core for other kernels/key layouts (e.g. the 4D convs over (sample, t, x, y, z)):
  :func:`kernel_offsets`, :func:`pad_offsets`, :func:`build_neighbor_map`,
  :func:`submanifold_conv`, :class:`NeighborMap`, :func:`encode_keys` / :func:`decode_keys`, and
  :func:`cached_neighbor_map` (a map over any key layout derived from a tensor's coords, cached
  on its spatial cache); :func:`per_axis` (int-or-sequence arguments per axis).
"""
from .backends import (
    BACKEND_CHOICES,
    BACKEND_ENV,
    CONV_BACKENDS,
    available_backends,
    cached_neighbor_map,
    coords_cache_get,
    coords_cache_put,
    get_neighbor_map,
    select_backend,
    spconv_available,
    subm_conv3d,
)
from .conv3d import SparseConv3d, SubMConvWeights
from .functional import (
    MISSING,
    KeySpec,
    NeighborMap,
    build_neighbor_map,
    decode_keys,
    encode_keys,
    kernel_offsets,
    pad_offsets,
    per_axis,
    submanifold_conv,
)

__all__ = [
    "SparseConv3d", "SubMConvWeights", "subm_conv3d",
    "BACKEND_ENV", "BACKEND_CHOICES", "CONV_BACKENDS", "select_backend", "available_backends",
    "coords_cache_get", "coords_cache_put",
    "spconv_available", "get_neighbor_map", "cached_neighbor_map",
    "MISSING", "KeySpec", "NeighborMap", "kernel_offsets", "pad_offsets", "encode_keys",
    "decode_keys", "build_neighbor_map", "submanifold_conv", "per_axis",
]

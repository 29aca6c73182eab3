"""Run-time choice between the submanifold-conv backends.

Backends (same inputs, same result up to float rounding):

* ``torch``  — exact pure PyTorch (:mod:`.functional`): neighbour map by coordinate hashing,
  gather - matmul - scatter-add per kernel tap. Any device, any float dtype. Default on CPU.
* ``spconv`` — ``spconv.pytorch.SubMConv3d`` fed with the same weight tensor. **CUDA only**: it
  is never used for CPU tensors (the CPU build of spconv on PyPI is not trusted for values).

Selection per call (:func:`select_backend`): the ``backend`` argument if given, else the
environment variable ``SPARSE_CONV_BACKEND`` (read at every call) in
``auto | torch | spconv``; ``auto`` = spconv iff the features are on CUDA, float32/float16 and
``spconv.pytorch`` imports. Asking for ``spconv`` on a CPU tensor falls back to ``torch`` with a
one-time warning; asking for it on CUDA without spconv installed raises ``ImportError``.

Both backends cache their per-coords index structures on the tensor's spatial cache
(``SparseTensor.register_spatial_cache``), so every conv on the same coords reuses them.
"""
from __future__ import annotations

import functools
import importlib
import os
import warnings
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from ..tensor import SparseTensor
from .functional import NeighborMap, build_neighbor_map, kernel_offsets, pad_offsets, same_keys, submanifold_conv

__all__ = [
    "coords_cache_get",
    "coords_cache_put",
    "BACKEND_ENV",
    "BACKEND_CHOICES",
    "CONV_BACKENDS",
    "spconv_available",
    "select_backend",
    "available_backends",
    "subm_conv3d",
    "get_neighbor_map",
    "cached_neighbor_map",
]

BACKEND_ENV = "SPARSE_CONV_BACKEND"
BACKEND_CHOICES = ("auto", "torch", "spconv")
SPCONV_ALGO_ENV = "SPCONV_ALGO"
"""Optional spconv algorithm override (``auto | native | implicit_gemm``), as in TRELLIS."""

NUM_BATCH_COLUMNS = 1
"""coords columns before the spatial axes (the batch column)."""

SPCONV_AUTO_DTYPES = (torch.float32, torch.float16)
"""Feature dtypes for which ``auto`` picks spconv on CUDA (others use the torch backend)."""

_NEIGHBOR_CACHE_PREFIX = "subm_neighbor_map"
_SPCONV_INDICE_CACHE = "spconv_indice_dict"
_SPCONV_SHAPE_CACHE = "spconv_spatial_shape"

Triple = Tuple[int, int, int]


# ---------------------------------------------------------------------------------- selection
@functools.lru_cache(maxsize=None)
def spconv_available() -> bool:
    """Whether ``spconv.pytorch`` imports (checked once per process)."""
    try:
        importlib.import_module("spconv.pytorch")
    except Exception:  # ImportError, or a broken CUDA build raising at import
        return False
    return True


@functools.lru_cache(maxsize=None)
def _warn_spconv_on_cpu() -> None:
    warnings.warn(
        f"{BACKEND_ENV}=spconv requested for a CPU tensor; spconv is only used on CUDA, "
        "falling back to the exact 'torch' backend",
        RuntimeWarning,
        stacklevel=3,
    )


def select_backend(device: torch.device, backend: Optional[str] = None,
                   dtype: Optional[torch.dtype] = None) -> str:
    """Backend name (``'torch'`` or ``'spconv'``) for features on ``device`` (see module doc).

    Args:
        device: where the features live.
        backend: explicit choice (``auto|torch|spconv``); default: ``$SPARSE_CONV_BACKEND``.
        dtype: feature dtype; ``auto`` keeps dtypes outside ``SPCONV_AUTO_DTYPES`` on torch.
    """
    choice = (backend or os.environ.get(BACKEND_ENV, "auto") or "auto").strip().lower()
    if choice not in BACKEND_CHOICES:
        raise ValueError(f"{BACKEND_ENV} must be one of {BACKEND_CHOICES}; got {choice!r}")
    on_cuda = torch.device(device).type == "cuda"
    if choice == "torch":
        return "torch"
    if choice == "auto":
        dtype_ok = dtype is None or dtype in SPCONV_AUTO_DTYPES
        return "spconv" if on_cuda and dtype_ok and spconv_available() else "torch"
    # explicit spconv
    if not on_cuda:
        _warn_spconv_on_cpu()
        return "torch"
    if not spconv_available():
        raise ImportError(
            f"{BACKEND_ENV}=spconv but 'spconv.pytorch' cannot be imported; install a CUDA build "
            "(e.g. spconv-cu126) or use SPARSE_CONV_BACKEND=torch"
        )
    return "spconv"


def available_backends(device: torch.device) -> Tuple[str, ...]:
    """Backends usable for features on ``device`` (``torch`` always; ``spconv`` on CUDA if installed)."""
    names = ["torch"]
    if torch.device(device).type == "cuda" and spconv_available():
        names.append("spconv")
    return tuple(names)


# ------------------------------------------------------------------------------ torch backend
def coords_cache_get(x: SparseTensor, key: str) -> Any:
    """A value cached by :func:`coords_cache_put` for coords equal to ``x.coords``, else None (what depends on
    the voxel set only: neighbour maps, pooling groups, ...; found again at every sampler step)."""
    entry = x.get_spatial_cache(key)
    if isinstance(entry, _CoordsEntry) and same_keys(entry.coords, x.coords):
        return entry.value
    return None


def coords_cache_put(x: SparseTensor, key: str, value: Any) -> None:
    """Keep ``value`` in ``x``'s spatial cache under ``key``, tagged with the coords it belongs to."""
    x.register_spatial_cache(key, _CoordsEntry(x.coords, value))


class _CoordsEntry:
    """A cached value tagged with the coords it was computed for (guards against a cache dict
    shared by tensors of different coords at the same scale)."""

    __slots__ = ("coords", "value")

    def __init__(self, coords: torch.Tensor, value: Any):
        self.coords, self.value = coords, value


def cached_neighbor_map(
    x: SparseTensor,
    cache_key: str,
    offsets: torch.Tensor,
    keys_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> NeighborMap:
    """Build (or fetch from ``x``'s spatial cache) a neighbour map over ``x``'s voxels.

    Args:
        x: the sparse tensor; its coords [N, 4] identify the voxel set.
        cache_key: spatial-cache name (must encode everything that determines the map
            besides the coords, e.g. kernel, dilation, key layout).
        offsets: [K, D] offsets in key space.
        keys_fn: coords [N, 4] int32 -> keys [N, D] (default: the coords themselves). E.g. a 4D
            conv maps the folded batch column b*T + t to (b, t, x, y, z) keys.
    Returns:
        :class:`NeighborMap` with ``table`` [N, K] (row order of ``x``).
    """
    nmap = coords_cache_get(x, cache_key)
    if nmap is None:
        keys = x.coords.long() if keys_fn is None else keys_fn(x.coords).long()
        nmap = NeighborMap(build_neighbor_map(keys, offsets.to(keys.device)), source=x.coords)
        coords_cache_put(x, cache_key, nmap)
    return nmap


def get_neighbor_map(x: SparseTensor, kernel_size: Triple, dilation: Triple) -> NeighborMap:
    """The 3D submanifold neighbour map of ``x``'s coords, cached on its spatial cache.

    Returns a :class:`NeighborMap` with ``table`` [N, prod(kernel_size)] whose tap order is
    spconv's (row-major over kx, ky, kz).
    """
    key = f"{_NEIGHBOR_CACHE_PREFIX}_{tuple(kernel_size)}_{tuple(dilation)}"
    offsets = pad_offsets(kernel_offsets(kernel_size, dilation), NUM_BATCH_COLUMNS)
    return cached_neighbor_map(x, key, offsets)


def _torch_subm_conv3d(x, weight, bias, kernel_size, dilation, indice_key):
    nmap = get_neighbor_map(x, kernel_size, dilation)
    return submanifold_conv(x.feats, nmap, weight, bias, weight_layout="spconv")


# ----------------------------------------------------------------------------- spconv backend
_SPCONV_SHELLS: Dict[tuple, torch.nn.Module] = {}


def _spconv_algo():
    from spconv.core import ConvAlgo

    name = os.environ.get(SPCONV_ALGO_ENV, "auto").strip().lower()
    table = {"native": ConvAlgo.Native, "implicit_gemm": ConvAlgo.MaskImplicitGemm}
    if name == "auto":
        return None
    if name not in table:
        raise ValueError(f"{SPCONV_ALGO_ENV} must be auto|native|implicit_gemm; got {name!r}")
    return table[name]


def spconv_shell(conv_class: str, c_in: int, c_out: int, kernel_size, has_bias: bool, indice_key: str,
                 **conv_kwargs) -> torch.nn.Module:
    """A parameterless spconv submanifold conv (``conv_class`` e.g. ``"SubMConv3d"``, ``"SubMConv4d"``)
    used only for its forward: the caller's weight and bias are attached per call. One shell per
    configuration and ``$SPCONV_ALGO`` setting, cached."""
    algo = _spconv_algo()
    cfg = (conv_class, c_in, c_out, tuple(kernel_size), tuple(sorted(conv_kwargs.items())), has_bias, indice_key, algo)
    shell = _SPCONV_SHELLS.get(cfg)
    if shell is None:
        import spconv.pytorch as spconv

        if algo is not None:
            conv_kwargs["algo"] = algo
        shell = getattr(spconv, conv_class)(c_in, c_out, tuple(kernel_size), bias=has_bias, indice_key=indice_key,
                                            **conv_kwargs)
        # drop the module's own parameters: the caller's tensors are attached at each call
        for name in list(shell._parameters):
            del shell._parameters[name]
        _SPCONV_SHELLS[cfg] = shell
    return shell


def _spconv_subm_conv3d(x, weight, bias, kernel_size, dilation, indice_key):
    import spconv.pytorch as spconv

    feats = x.feats.contiguous()
    c_out, c_in = weight.shape[0], weight.shape[-1]
    key = indice_key or f"subm_{tuple(kernel_size)}_{tuple(dilation)}"
    shell = spconv_shell("SubMConv3d", c_in, c_out, kernel_size, bias is not None, key, dilation=tuple(dilation))
    # plain instance attributes (never registered parameters): the caller owns the tensors
    shell.__dict__["weight"] = weight.to(feats.dtype)
    shell.__dict__["bias"] = None if bias is None else bias.to(feats.dtype)

    spatial_shape = coords_cache_get(x, _SPCONV_SHAPE_CACHE)
    if spatial_shape is None:
        spatial_shape = (x.coords[:, NUM_BATCH_COLUMNS:].max(0).values + 1).tolist()
        coords_cache_put(x, _SPCONV_SHAPE_CACHE, spatial_shape)
    sp = spconv.SparseConvTensor(feats, x.coords.contiguous(), spatial_shape, x.batch_size)
    indice_dict = coords_cache_get(x, _SPCONV_INDICE_CACHE)
    if indice_dict is not None:
        sp.indice_dict = dict(indice_dict)
    out = shell(sp)
    coords_cache_put(x, _SPCONV_INDICE_CACHE, out.indice_dict)
    return out.features


CONV_BACKENDS: Dict[str, Callable] = {"torch": _torch_subm_conv3d, "spconv": _spconv_subm_conv3d}
"""name -> fn(x, weight [out,kx,ky,kz,in], bias [out] | None, kernel_size, dilation, indice_key) -> feats."""


def subm_conv3d(
    x: SparseTensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    kernel_size: Triple,
    dilation: Triple = (1, 1, 1),
    indice_key: Optional[str] = None,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """3D submanifold conv of ``x`` (feats [N, Cin]) -> new feats [N, Cout] in the same row order.

    Args:
        weight: spconv layout [Cout, kx, ky, kz, Cin] (cast to the feats dtype).
        bias: [Cout] or None.
        kernel_size, dilation: per axis (x, y, z) = coords columns 1..3.
        indice_key: spconv's name for sharing index pairs (the torch backend keys its cache by
            kernel size and dilation, so it ignores this).
        backend: force ``'torch'`` / ``'spconv'`` / ``'auto'`` for this call (default: env).
    """
    name = select_backend(x.device, backend, x.feats.dtype)
    if x.feats.shape[0] == 0:
        name = "torch"  # nothing to index; spconv cannot size an empty grid
    return CONV_BACKENDS[name](x, weight, bias, tuple(kernel_size), tuple(dilation), indice_key)

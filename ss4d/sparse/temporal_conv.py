"""Submanifold temporal / 4D sparse convolutions on folded sparse tensors (SS4D's CompNet convs).

A folded sparse tensor has coords ``[N, 4]`` int32 as ``(b·T + t, x, y, z)`` (see ``ss4d.frames``).
These convolutions see it as a 4D sparse grid per sample: site keys ``(b, t, x, y, z)`` with the
kernel sliding over the four axes ``(t, x, y, z)`` and never across samples. A frame outside
``[0, T)`` is simply absent, so a clip's first and last frames have no outside neighbour.

* :class:`SparseConv1d` -- kernel ``(k, 1, 1, 1)``: mixes the *same* voxel across frames
  ``t-1, t, t+1`` (for k = 3) where those sites are active.
* :class:`SparseConv4d` -- kernel ``(k, k, k, k)`` (81 taps for k = 3).

Semantics (submanifold, cross-correlation; output sites and row order = input's)::

    out[p] = bias + sum_j W[:, j, :] · in[p + d_j]     over active sites p + d_j only,

``d_j`` = the offset of kernel index ``unravel_index(j, kernel)`` (row-major over (t, x, y, z),
last axis fastest), centred: ``(i - k // 2)`` per axis. This is spconv's ``SubMConv4d`` with its
default weight layout ``[out, kt, kx, ky, kz, in]`` (FILTER_HWIO off), which is how SS4D stores
``conv.weight`` (``[out, 3, 1, 1, 1, in]`` / ``[out, 3, 3, 3, 3, in]``) plus ``conv.bias`` [out].

Backends (one weight tensor for both):

* ``torch`` -- exact pure PyTorch through trellis_ext's generic N-D neighbour core
  (``build_neighbor_map`` on the 5-column keys, ``submanifold_conv`` gather-matmul-scatter).
  Any device. The neighbour map is cached on the tensor's spatial cache per (kernel, T).
* ``spconv`` -- ``spconv.pytorch.SubMConv4d`` fed with the same weight; CUDA tensors only.

The choice follows trellis_ext's rule (:func:`trellis_ext.sparse.conv.select_backend`: the
``backend`` argument, else ``SPARSE_CONV_BACKEND`` = ``auto|torch|spconv``; auto = spconv iff the
features are on CUDA, fp32 / fp16, and spconv imports), the same as for the 3D convs.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ss4d.frames import check_folded_batch, require_num_frames, split_folded_index
from trellis_ext.sparse import SparseTensor
from trellis_ext.sparse.conv import (NeighborMap, SubMConvWeights, cached_neighbor_map, kernel_offsets,
                                     pad_offsets, select_backend, submanifold_conv)
from trellis_ext.sparse.conv.backends import spconv_shell

__all__ = [
    "KERNEL_AXES",
    "sample_frame_keys",
    "temporal_neighbor_map",
    "subm_conv_temporal",
    "SparseTemporalConv",
    "SparseConv1d",
    "SparseConv4d",
]

KERNEL_AXES = 4
"""Axes a temporal kernel slides over: (t, x, y, z)."""
SAMPLE_COLUMNS = 1
"""Key columns the kernel never moves along: the sample index b."""
_NEIGHBOR_CACHE_PREFIX = "temporal_subm_neighbor_map"
_SPCONV_INDICE_CACHE_PREFIX = "temporal_spconv_indice_dict"

IntOrSeq = Union[int, Sequence[int]]


def sample_frame_keys(coords: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Folded coords [N, 4] ``(b·T + t, x, y, z)`` -> keys [N, 5] int64 ``(b, t, x, y, z)``."""
    sample, frame = split_folded_index(coords[:, 0].long(), num_frames)
    return torch.cat([sample[:, None], frame[:, None], coords[:, 1:].long()], dim=1)


def temporal_neighbor_map(x: SparseTensor, kernel_size: Tuple[int, ...], num_frames: int) -> NeighborMap:
    """Neighbour map of ``x`` over keys (b, t, x, y, z) for a (t, x, y, z) kernel, cached on ``x``.

    Returns a :class:`NeighborMap` whose ``table`` is [N, prod(kernel_size)]: column j holds the row of
    site ``(b, t, x, y, z) + (0, d_j)`` or -1 (tap order = spconv's row-major kernel order).
    """
    key = f"{_NEIGHBOR_CACHE_PREFIX}_{tuple(kernel_size)}_T{num_frames}"
    offsets = pad_offsets(kernel_offsets(kernel_size), SAMPLE_COLUMNS)
    return cached_neighbor_map(x, key, offsets, keys_fn=functools.partial(sample_frame_keys, num_frames=num_frames))


def _torch_subm_conv_temporal(x, weight, bias, kernel_size, num_frames, indice_key):
    nmap = temporal_neighbor_map(x, kernel_size, num_frames)
    return submanifold_conv(x.feats, nmap, weight, bias, weight_layout="spconv")


# ----------------------------------------------------------------------------- spconv backend
def _spconv_subm_conv_temporal(x, weight, bias, kernel_size, num_frames, indice_key):
    import spconv.pytorch as spconv

    feats = x.feats.contiguous()
    c_out, c_in = weight.shape[0], weight.shape[-1]
    key = indice_key or f"subm4d_{tuple(kernel_size)}"
    shell = spconv_shell("SubMConv4d", c_in, c_out, kernel_size, bias is not None, key)
    shell.__dict__["weight"] = weight.to(feats.dtype)
    shell.__dict__["bias"] = None if bias is None else bias.to(feats.dtype)
    keys = sample_frame_keys(x.coords, num_frames).to(torch.int32).contiguous()
    spatial_shape = (keys[:, 1:].max(0).values + 1).tolist() if keys.shape[0] else [1] * KERNEL_AXES
    num_samples = check_folded_batch(x.batch_size, num_frames)
    sp = spconv.SparseConvTensor(feats, keys, spatial_shape, num_samples)
    cache_key = f"{_SPCONV_INDICE_CACHE_PREFIX}_T{num_frames}"
    indice_dict = x.get_spatial_cache(cache_key)
    if indice_dict is not None:
        sp.indice_dict = dict(indice_dict)
    out = shell(sp)
    x.register_spatial_cache(cache_key, out.indice_dict)
    return out.features  # submanifold: output sites and order = input's


_BACKENDS = {"torch": _torch_subm_conv_temporal, "spconv": _spconv_subm_conv_temporal}


def subm_conv_temporal(
    x: SparseTensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    kernel_size: Sequence[int],
    num_frames: int,
    indice_key: Optional[str] = None,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """Submanifold conv over (t, x, y, z) within each sample of a folded tensor.

    Args:
        x: folded SparseTensor, feats [N, Cin], coords [N, 4] int32 as (b·T + t, x, y, z),
            batch size B·T.
        weight: [Cout, kt, kx, ky, kz, Cin] (spconv layout), cast to the feats dtype.
        bias: [Cout] or None.
        kernel_size: (kt, kx, ky, kz), odd.
        num_frames: T (the batch size must be a multiple of it).
        indice_key: spconv index-sharing name (the torch backend caches by kernel and T anyway).
        backend: ``'torch' | 'spconv' | 'auto'`` for this call (default: ``SPARSE_CONV_BACKEND``).

    Returns:
        feats [N, Cout] in x's row order.
    """
    num_frames = require_num_frames(num_frames, x.batch_size, "subm_conv_temporal")
    name = select_backend(x.device, backend, x.feats.dtype)
    return _BACKENDS[name](x, weight, bias, tuple(kernel_size), num_frames, indice_key)


# ---------------------------------------------------------------------------------- modules
def _per_axis(value: IntOrSeq, name: str) -> Tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * KERNEL_AXES
    value = tuple(int(v) for v in value)
    if len(value) != KERNEL_AXES:
        raise ValueError(f"{name} needs {KERNEL_AXES} values (t, x, y, z); got {value}")
    return value


class SparseTemporalConv(nn.Module):
    """Submanifold sparse conv over (t, x, y, z) inside each sample of a folded tensor.

    Args:
        in_channels, out_channels: feature widths.
        kernel_size: (kt, kx, ky, kz), odd sizes (subclasses map an int to their kernel shape).
        stride: must be 1 (submanifold only, as in SS4D).
        dilation: must be 1.
        padding: must be None (an explicit padding would be a site-dilating conv).
        bias: learnable bias.
        indice_key: spconv index-sharing name.
        backend: force ``auto|torch|spconv`` for this module (default: the environment variable).

    State dict: ``conv.weight`` [out, kt, kx, ky, kz, in], ``conv.bias`` [out].
    forward(x SparseTensor feats [N, in], num_frames T) -> SparseTensor feats [N, out], same coords,
    layout and spatial cache.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrSeq, stride: IntOrSeq = 1,
                 dilation: IntOrSeq = 1, padding: Optional[IntOrSeq] = None, bias: bool = True,
                 indice_key: Optional[str] = None, backend: Optional[str] = None):
        super().__init__()
        kernel_size = _per_axis(kernel_size, "kernel_size")
        if any(s != 1 for s in _per_axis(stride, "stride")):
            raise NotImplementedError(f"{type(self).__name__} supports only submanifold convs (stride 1); "
                                      f"got stride={stride}")
        if any(d != 1 for d in _per_axis(dilation, "dilation")):
            raise NotImplementedError(f"{type(self).__name__} supports only dilation 1; got {dilation}")
        if padding is not None:
            raise NotImplementedError(f"{type(self).__name__}: an explicit padding selects a regular "
                                      "(site-dilating) sparse conv; only submanifold convs are implemented")
        if any(k < 1 or k % 2 == 0 for k in kernel_size):
            raise ValueError(f"submanifold convs need odd kernel sizes; got {kernel_size}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = kernel_size
        self.indice_key = indice_key
        self.backend = backend
        self.conv = SubMConvWeights(in_channels, out_channels, kernel_size, (1,) * KERNEL_AXES, bias)

    def forward(self, x: SparseTensor, num_frames: int) -> SparseTensor:
        if x.feats.dim() != 2 or x.feats.shape[1] != self.in_channels:
            raise ValueError(f"expected feats [N, {self.in_channels}]; got {tuple(x.feats.shape)}")
        feats = subm_conv_temporal(x, self.conv.weight, self.conv.bias, self.kernel_size, num_frames,
                                   self.indice_key, self.backend)
        return x.replace(feats)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size} (t, x, y, z)"


class SparseConv1d(SparseTemporalConv):
    """Temporal-only submanifold conv: kernel ``(k, 1, 1, 1)`` over (t, x, y, z).

    ``kernel_size`` int k -> (k, 1, 1, 1); weight ``conv.weight`` [out, k, 1, 1, 1, in].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrSeq = 3, **kwargs):
        if isinstance(kernel_size, int):
            kernel_size = (kernel_size,) + (1,) * (KERNEL_AXES - 1)
        super().__init__(in_channels, out_channels, kernel_size, **kwargs)


class SparseConv4d(SparseTemporalConv):
    """Full 4D submanifold conv: kernel ``(k, k, k, k)`` over (t, x, y, z).

    ``kernel_size`` int k -> (k, k, k, k); weight ``conv.weight`` [out, k, k, k, k, in].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrSeq = 3, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, **kwargs)

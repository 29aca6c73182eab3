"""``SparseConv3d``: TRELLIS-compatible 3D submanifold sparse convolution."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..tensor import SparseTensor
from .backends import subm_conv3d
from .functional import per_axis

__all__ = ["SparseConv3d", "SubMConvWeights"]

SPATIAL_DIMS = 3
IntOr3 = Union[int, Sequence[int]]


class SubMConvWeights(nn.Module):
    """Parameter holder living at ``<conv>.conv`` so keys are ``conv.weight`` / ``conv.bias``.

    Attributes:
        weight: [out_channels, kx, ky, kz, in_channels] (spconv 2 layout).
        bias: [out_channels] or None.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Tuple[int, int, int],
                 dilation: Tuple[int, int, int], bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.dilation = kernel_size, dilation
        self.weight = nn.Parameter(torch.empty(out_channels, *kernel_size, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in_channels * kernel volume
        (what kaiming_uniform(a=sqrt(5)) gives for nn.Conv3d)."""
        bound = 1.0 / math.sqrt(self.in_channels * math.prod(self.kernel_size))
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"dilation={self.dilation}, bias={self.bias is not None}")


class SparseConv3d(nn.Module):
    """Submanifold 3D sparse convolution (output sites = input sites, same row order).

    ``out[p] = b + sum_{d} W[:, d + c, :] . in[p + d]`` over the active sites ``p + d`` only,
    d ranging over the kernel offsets ((j - k // 2) * dilation per axis; for k = 3,
    d in {-1, 0, 1}^3), c = k // 2, kernel axes = coords columns 1..3 (cross-correlation).

    Args:
        in_channels, out_channels: feature widths.
        kernel_size: int or (kx, ky, kz), odd.
        stride: must be 1 (TRELLIS models only use submanifold convs).
        dilation: int or per axis.
        padding: must be None (in TRELLIS an explicit padding selects a regular,
            site-dilating sparse conv, which is not implemented).
        bias: learnable bias.
        indice_key: passed to spconv for index sharing (the torch backend shares by kernel size
            and dilation on the tensor's spatial cache regardless).
        spconv_1x1_compat: for kernel volume 1, reproduce spconv's fast path, which multiplies
            by ``weight.view(in_channels, out_channels)`` (a reinterpretation of the
            [out, 1, 1, 1, in] buffer, not a transpose). TRELLIS checkpoints (mesh decoder
            ``skip_connection``) were trained with it, so it is the default; ``False`` uses the
            mathematical ``feats @ weight.reshape(out, in).T``. 1x1 convs never go through a
            backend (they are a matmul), so both backends agree on this.
        backend: force a backend for this module (``auto|torch|spconv``); default: the
            ``SPARSE_CONV_BACKEND`` environment variable at each call.

    State dict: ``conv.weight`` [out, kx, ky, kz, in], ``conv.bias`` [out].
    Input/output: ``SparseTensor`` with feats [N, in_channels] -> feats [N, out_channels]
    (any float dtype; the weight is cast to the feats dtype).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOr3,
        stride: IntOr3 = 1,
        dilation: IntOr3 = 1,
        padding: Optional[IntOr3] = None,
        bias: bool = True,
        indice_key: Optional[str] = None,
        spconv_1x1_compat: bool = True,
        backend: Optional[str] = None,
    ):
        super().__init__()
        kernel_size = per_axis(kernel_size, SPATIAL_DIMS, "kernel_size")
        stride = per_axis(stride, SPATIAL_DIMS, "stride")
        dilation = per_axis(dilation, SPATIAL_DIMS, "dilation")
        if any(s != 1 for s in stride):
            raise NotImplementedError(
                f"SparseConv3d supports only submanifold convs (stride 1); got stride={stride}. "
                "Use SparseDownsample / SparseUpsample for resolution changes."
            )
        if padding is not None:
            raise NotImplementedError(
                "SparseConv3d with an explicit padding would be a regular (site-dilating) sparse "
                "conv; only submanifold convs (padding=None) are implemented"
            )
        if any(k % 2 == 0 or k < 1 for k in kernel_size):
            raise ValueError(f"submanifold convs need odd kernel sizes; got {kernel_size}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.dilation = kernel_size, dilation
        self.indice_key = indice_key
        self.spconv_1x1_compat = spconv_1x1_compat
        self.backend = backend
        self.conv = SubMConvWeights(in_channels, out_channels, kernel_size, dilation, bias)

    @property
    def is_pointwise(self) -> bool:
        return math.prod(self.kernel_size) == 1

    def _pointwise(self, feats: torch.Tensor) -> torch.Tensor:
        weight = self.conv.weight.to(feats.dtype)
        if self.spconv_1x1_compat:
            w_io = weight.reshape(self.in_channels, self.out_channels)  # spconv's reinterpretation
        else:
            w_io = weight.reshape(self.out_channels, self.in_channels).t()
        out = feats @ w_io
        if self.conv.bias is not None:
            out = out + self.conv.bias.to(feats.dtype)
        return out

    def forward(self, x: SparseTensor) -> SparseTensor:
        if x.feats.dim() != 2 or x.feats.shape[1] != self.in_channels:
            raise ValueError(f"expected feats [N, {self.in_channels}]; got {tuple(x.feats.shape)}")
        if self.is_pointwise:
            return x.replace(self._pointwise(x.feats))
        feats = subm_conv3d(x, self.conv.weight, self.conv.bias, self.kernel_size, self.dilation,
                            self.indice_key, self.backend)
        return x.replace(feats)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.dilation != (1, 1, 1):
            s += f", dilation={self.dilation}"
        if self.is_pointwise:
            s += f", spconv_1x1_compat={self.spconv_1x1_compat}"
        return s

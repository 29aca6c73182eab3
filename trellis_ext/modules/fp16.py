"""Precision conversion of the "torso" layers (TRELLIS's fp16 policy, plus a bf16 variant).

TRELLIS halves only the weights of Linear / Conv / SparseLinear / SparseConv3d layers inside a model's
blocks; norms (their affine weights and fp32 compute), RMS-norm gammas, embedders, buffers and the
input/output layers stay fp32. The functions here convert the qualifying layers among ``module`` and
all its descendants, in place; they are idempotent, so ``Module.apply`` works too::

    convert_module_to(model.blocks, torch.bfloat16)
    model.blocks.apply(convert_module_to_f16)          # TRELLIS style, same result

A module is converted when it is an ``nn.Linear`` (``SparseLinear`` is one), an ``nn.Conv*`` /
``nn.ConvTranspose*``, or any module with a ``conv`` child that holds a ``weight`` (the sparse-conv
wrappers such as ``SparseConv3d``: weight at ``.conv.weight``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = [
    "convert_module_to",
    "convert_module_to_f16",
    "convert_module_to_bf16",
    "convert_module_to_f32",
    "is_precision_module",
    "zero_module",
]

_DENSE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                nn.ConvTranspose3d)


def _conv_child(module: nn.Module):
    child = getattr(module, "conv", None)
    if isinstance(child, nn.Module) and isinstance(getattr(child, "weight", None), torch.Tensor):
        return child
    return None


def is_precision_module(module: nn.Module) -> bool:
    """Whether the precision converters change this module's parameters."""
    return isinstance(module, _DENSE_TYPES) or _conv_child(module) is not None


def _cast_direct_params(module: nn.Module, dtype: torch.dtype) -> None:
    for p in module.parameters(recurse=False):
        if p.is_floating_point():
            p.data = p.data.to(dtype)


def convert_module_to(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast the weight/bias of every Linear/Conv-like layer in ``module`` (itself included) to ``dtype``.

    Parameters are swapped in place (``p.data``), so optimisers keep their references. Returns ``module``.
    """
    for m in module.modules():
        if is_precision_module(m):
            _cast_direct_params(m, dtype)
            child = _conv_child(m)
            if child is not None:
                _cast_direct_params(child, dtype)
    return module


def convert_module_to_f16(module: nn.Module) -> nn.Module:
    """``convert_module_to(module, torch.float16)``."""
    return convert_module_to(module, torch.float16)


def convert_module_to_bf16(module: nn.Module) -> nn.Module:
    """``convert_module_to(module, torch.bfloat16)``."""
    return convert_module_to(module, torch.bfloat16)


def convert_module_to_f32(module: nn.Module) -> nn.Module:
    """``convert_module_to(module, torch.float32)`` (undo the above)."""
    return convert_module_to(module, torch.float32)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` in place and return it (zero-init output layers)."""
    for p in module.parameters():
        p.detach().zero_()
    return module

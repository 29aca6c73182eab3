"""Attention backend selection.

Backends (names as accepted by ``ATTN_BACKEND`` and by the ``backend=`` argument of the functional API):

* ``flash_attn`` -- the ``flash-attn`` package (``flash_attn_func`` / ``flash_attn_varlen_func``).
  CUDA tensors in fp16/bf16 only.
* ``xformers``   -- ``xformers.ops.memory_efficient_attention`` (+ ``BlockDiagonalMask`` for varlen).
  CUDA tensors in fp16/bf16 only (the xformers CPU path raises, see docs/notes).
* ``sdpa``       -- ``torch.nn.functional.scaled_dot_product_attention``: any device, any float dtype.
* ``naive``      -- explicit ``softmax(Q Kᵀ / √D) V`` computed in (at least) fp32: the readable reference
  the other backends are tested against. Memory is O(L²); use it for tests and debugging only.
* ``auto``       -- the default: ``flash_attn`` if it imports and the tensors qualify, else ``xformers`` if
  it imports and the tensors qualify, else ``sdpa``.

Selection happens at *call time* (``select_backend``): the environment variable is read on every call,
so tests and scripts can switch backends without re-importing. A requested CUDA backend that cannot
serve the given tensors (not installed, CPU tensors, fp32) falls back to ``sdpa`` with a one-time
warning -- attention never fails on CPU because of the backend choice.
"""
from __future__ import annotations

import functools
import importlib
import os
import warnings
from typing import List, Optional, Tuple

import torch

__all__ = [
    "ATTN_BACKEND_ENV",
    "BACKENDS",
    "CUDA_BACKENDS",
    "HALF_DTYPES",
    "requested_backend",
    "backend_installed",
    "backend_supports",
    "select_backend",
    "available_backends",
]

#: Environment variable that overrides the backend choice.
ATTN_BACKEND_ENV = "ATTN_BACKEND"
#: Every accepted backend name (``auto`` resolves to one of the others).
BACKENDS: Tuple[str, ...] = ("auto", "flash_attn", "xformers", "sdpa", "naive")
#: Backends that need an extra package and CUDA half-precision tensors.
CUDA_BACKENDS: Tuple[str, ...] = ("flash_attn", "xformers")
#: Dtypes the CUDA kernels accept.
HALF_DTYPES: Tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)
#: Largest head dim the flash-attn kernels accept.
FLASH_ATTN_MAX_HEAD_DIM = 256

_MODULE_OF_BACKEND = {"flash_attn": "flash_attn", "xformers": "xformers.ops"}
_warned: set = set()


def requested_backend() -> str:
    """The backend named by ``ATTN_BACKEND`` (lower-cased; ``auto`` when unset).

    Raises:
        ValueError: if the variable holds an unknown name.
    """
    name = os.environ.get(ATTN_BACKEND_ENV, "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"{ATTN_BACKEND_ENV}={name!r}; expected one of {BACKENDS}")
    return name


@functools.lru_cache(maxsize=None)
def backend_installed(name: str) -> bool:
    """Whether the package behind a backend imports (always True for ``sdpa`` and ``naive``).

    The import is attempted once per process; any exception (missing package, a binary built for another
    CUDA/torch) counts as "not installed".
    """
    if name not in _MODULE_OF_BACKEND:
        return name in BACKENDS
    try:
        importlib.import_module(_MODULE_OF_BACKEND[name])
        return True
    except Exception:  # noqa: BLE001 - broken binary wheels raise all sorts of errors
        return False


def backend_supports(name: str, *tensors: torch.Tensor) -> bool:
    """Whether ``name`` can run attention on ``tensors`` (device, dtype, installed package, head dim)."""
    if name in ("sdpa", "naive"):
        return True
    if name not in CUDA_BACKENDS or not backend_installed(name):
        return False
    for t in tensors:
        if not t.is_cuda or t.dtype not in HALF_DTYPES:
            return False
    if name == "flash_attn" and any(t.shape[-1] > FLASH_ATTN_MAX_HEAD_DIM for t in tensors):
        return False
    return True


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def select_backend(*tensors: torch.Tensor, backend: Optional[str] = None) -> str:
    """Resolve the backend for one attention call on ``tensors`` (q, k, v).

    Args:
        tensors: the attention inputs; their device and dtype decide what ``auto`` picks.
        backend: explicit choice that takes precedence over ``ATTN_BACKEND`` (``None`` = use the variable).

    Returns:
        One of ``flash_attn``, ``xformers``, ``sdpa``, ``naive``.
    """
    name = (backend or requested_backend()).lower()
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; expected one of {BACKENDS}")
    if name == "auto":
        for cand in CUDA_BACKENDS:
            if backend_supports(cand, *tensors):
                return cand
        return "sdpa"
    if name in CUDA_BACKENDS and not backend_supports(name, *tensors):
        why = "not installed" if not backend_installed(name) else "needs CUDA fp16/bf16 tensors"
        _warn_once(f"{name}:{why}", f"attention backend {name!r} {why}; falling back to 'sdpa'")
        return "sdpa"
    return name


def available_backends(*tensors: torch.Tensor) -> List[str]:
    """Every concrete backend that can serve ``tensors`` here (``sdpa`` and ``naive`` always)."""
    return [b for b in ("flash_attn", "xformers", "sdpa", "naive") if backend_supports(b, *tensors)]

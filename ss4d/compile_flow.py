"""Opt-in ``torch.compile`` of the dense structure-flow trunk (``Pipeline.enable_compile()``,
``ss4d-generate --compile``).

What is compiled: the ``forward`` of :data:`COMPILE_TARGETS` (the sparse-structure flow: dense
tensors ``[T, 8, 16, 16, 16]``, the same shapes at every step of a run). The module keeps its identity
and its hooks (they run eagerly around the compiled forward), so call counters and low-VRAM offload
work as before; :func:`uncompile_forward` restores the eager forward. Compilation happens at the first
call (tens of seconds on a GPU; a new clip length or batched CFG compiles once more).

Mode: ``"reduce-overhead"`` (CUDA graphs: the 24-block trunk replayed as one graph, no per-kernel
launch cost) on CUDA with inductor when the module stays on the GPU (not in low-VRAM mode, where the
weights move every run); plain compilation elsewhere. Each CUDA-graph call starts a new graph step
and clones its output, so outputs the sampler still holds (Heun's two velocities) are never
overwritten by the next replay.

Requested but unavailable: the rule of the attention and sparse-conv backend registries
(:mod:`trellis_ext.attention.backends`: a backend that cannot serve falls back with a one-time
warning). If ``torch.compile`` is missing, inductor has no compiler to use (no C++ compiler on the
CPU, no triton on CUDA), or compiling fails at the first call, one warning says so and the flow runs
eagerly, with the same numbers. :class:`CompileStatus` says what happened (the CLI prints it).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

__all__ = ["COMPILE_TARGETS", "CUDA_GRAPH_MODE", "DEFAULT_BACKEND", "CompileStatus", "compile_unavailable_reason",
           "compile_forward", "uncompile_forward", "is_compiled"]

#: Model keys of the pipeline whose forward is compiled (the dense trunk; the SLat flow is sparse,
#: with a voxel count that changes per clip).
COMPILE_TARGETS = ("sparse_structure_flow_model",)
#: torch.compile mode with CUDA graphs.
CUDA_GRAPH_MODE = "reduce-overhead"
DEFAULT_BACKEND = "inductor"
#: C++ compilers inductor can use on the CPU (``$CXX`` first).
CPP_COMPILERS = ("g++", "c++", "clang++")
_warned: set = set()


@dataclass
class CompileStatus:
    """``active``: the compiled forward is installed; ``mode`` / ``backend`` as passed to
    ``torch.compile``; ``reason``: why it runs eagerly (None when active)."""

    active: bool
    backend: str
    mode: Optional[str] = None
    reason: Optional[str] = None

    def describe(self) -> str:
        if self.active:
            return f"compiled ({self.backend}, mode {self.mode or 'default'})"
        return f"not compiled: {self.reason}; running eagerly (same numbers)"


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def compile_unavailable_reason(device: torch.device, backend: str = DEFAULT_BACKEND) -> Optional[str]:
    """Why ``torch.compile`` with ``backend`` cannot run on ``device`` here (None: it can)."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if backend != DEFAULT_BACKEND:
        return None
    if torch.device(device).type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "inductor needs the triton package on CUDA (pip install triton)"
        return None
    cxx = os.environ.get("CXX")
    if not any(shutil.which(c) for c in ((cxx,) if cxx else ()) + CPP_COMPILERS):
        return "inductor needs a C++ compiler on the CPU (none of $CXX, g++, c++, clang++ found)"
    return None


def _compile_errors() -> tuple:
    errors = []
    for mod, name in (("torch._dynamo.exc", "BackendCompilerFailed"), ("torch._inductor.exc", "InductorError")):
        try:
            errors.append(getattr(importlib.import_module(mod), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


class _CompiledForward:
    """The module's compiled forward; falls back to the eager one (warning once) if compiling fails."""

    def __init__(self, module: nn.Module, compiled: Callable[..., Any], cuda_graphs: bool):
        self.eager = type(module).forward.__get__(module)
        self.compiled: Optional[Callable[..., Any]] = compiled
        self.cuda_graphs = cuda_graphs
        self.failure: Optional[str] = None

    def __call__(self, *args, **kwargs):
        if self.compiled is None:
            return self.eager(*args, **kwargs)
        try:
            if self.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            out = self.compiled(*args, **kwargs)
        except _compile_errors() as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            self.failure = f"compiling failed ({type(e).__name__}: {first})"
            self.compiled = None
            _warn_once(f"ss4d: {self.failure}; the structure flow runs eagerly (same numbers)")
            return self.eager(*args, **kwargs)
        return out.clone() if self.cuda_graphs else out


def compile_forward(module: nn.Module, device: torch.device, backend: str = DEFAULT_BACKEND,
                    cuda_graphs: bool = True) -> CompileStatus:
    """Install a compiled ``forward`` on ``module`` (see the module docstring for the mode); when
    compilation is unavailable, warn once and leave the module eager."""
    device = torch.device(device)
    reason = compile_unavailable_reason(device, backend)
    if reason is not None:
        _warn_once(f"ss4d: --compile requested but {reason}; running eagerly (same numbers)")
        return CompileStatus(False, backend, reason=reason)
    mode = CUDA_GRAPH_MODE if (device.type == "cuda" and cuda_graphs and backend == DEFAULT_BACKEND) else None
    uncompile_forward(module)
    compiled = torch.compile(type(module).forward.__get__(module), backend=backend, mode=mode, dynamic=False)
    module.forward = _CompiledForward(module, compiled, cuda_graphs=mode == CUDA_GRAPH_MODE)
    return CompileStatus(True, backend, mode=mode)


def uncompile_forward(module: nn.Module) -> None:
    """Back to the class's eager forward."""
    if isinstance(module.__dict__.get("forward"), _CompiledForward):
        del module.forward


def is_compiled(module: nn.Module) -> bool:
    """``module`` has a compiled forward that has not fallen back to eager."""
    fwd = module.__dict__.get("forward")
    return isinstance(fwd, _CompiledForward) and fwd.compiled is not None

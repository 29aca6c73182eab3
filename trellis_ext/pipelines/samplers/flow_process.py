"""The rectified-flow forward process (TRELLIS's definitions), shared by the samplers and the trainers.

Convention, with t ∈ [0, 1] and t = 1 pure noise::

    x_t = (1 - t)·x_0 + (σ_min + (1 - σ_min)·t)·ε          (diffuse)
    v   = (1 - σ_min)·ε - x_0                               (velocity_target; dx_t/dt)
    x_0 = (1 - σ_min)·x_t - (σ_min + (1 - σ_min)·t)·v       (x0_from_velocity)

The models take the time scaled by :data:`TIMESTEP_SCALE` (``model(x_t, 1000·t, cond)``).
Every function works on dense tensors and on anything with ``*``/``-`` (``SparseTensor``); ``t`` is a
float or a tensor broadcastable against ``x_0`` (see :func:`expand_t`).
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["SIGMA_MIN", "TIMESTEP_SCALE", "diffuse", "velocity_target", "x0_from_velocity", "model_time", "expand_t"]

SIGMA_MIN = 1e-5          # TRELLIS's default σ_min
TIMESTEP_SCALE = 1000.0   # the models take t in [0, 1000]


def expand_t(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-row t [R] -> [R, 1, ..., 1] broadcastable against a dense ``x`` [R, ...]."""
    return t.reshape(-1, *([1] * (x.dim() - 1)))


def diffuse(x_0: Any, noise: Any, t: Any, sigma_min: float = SIGMA_MIN) -> Any:
    """x_t = (1 - t)·x_0 + (σ_min + (1 - σ_min)·t)·ε."""
    return (1 - t) * x_0 + (sigma_min + (1 - sigma_min) * t) * noise


def velocity_target(x_0: Any, noise: Any, sigma_min: float = SIGMA_MIN) -> Any:
    """v = (1 - σ_min)·ε - x_0 (the regression target of the flow models)."""
    return (1 - sigma_min) * noise - x_0


def x0_from_velocity(x_t: Any, t: Any, v: Any, sigma_min: float = SIGMA_MIN) -> Any:
    """x_0 = (1 - σ_min)·x_t - (σ_min + (1 - σ_min)·t)·v (inverse of :func:`diffuse` given v)."""
    return (1 - sigma_min) * x_t - (sigma_min + (1 - sigma_min) * t) * v


def model_time(t: torch.Tensor) -> torch.Tensor:
    """The timestep the models take: ``1000·t`` (float32)."""
    return (TIMESTEP_SCALE * t).to(torch.float32)

r"""Flow-matching Heun samplers: second-order predictor-corrector on the Euler samplers' time grid.

Same forward process (:mod:`.flow_process`), same time grid (:func:`.flow_euler.time_grid`), same
velocity rule (classifier-free guidance, guidance interval, ``cfg_mode``, ``kv_cache``) as the
Euler samplers of :mod:`.flow_euler`; only the step differs. From x at t to t_prev (h = t - t_prev)::

    v       = v(x, t)                              (predictor: an Euler step)
    x_euler = x - h·v
    v'      = v(x_euler, t_prev)                   (corrector: the velocity at the step's end)
    x_prev  = x - h·(v + v') / 2                   (trapezoidal rule)

Two velocity evaluations per step (each guided or not by the guidance-interval rule at its own
time, so the corrector at t_prev < lo makes a single pass), local error O(h³), global error O(h²)
(Euler: O(h)). The trapezoidal rule integrates a velocity that is linear in t and independent of
x exactly. Used by the ``fast`` preset (:mod:`ss4d.presets`): fewer steps at the same quality.
"""
from __future__ import annotations

from typing import Any

from .flow_euler import FlowEulerCfgSampler, FlowEulerGuidanceIntervalSampler, FlowEulerSampler, time_grid

__all__ = ["FlowHeunSampler", "FlowHeunCfgSampler", "FlowHeunGuidanceIntervalSampler", "HEUN_SAMPLERS",
           "SOLVERS", "heun_counterpart", "velocity_evaluations"]

#: Integration rules: one velocity evaluation per step (Euler) or two (Heun).
SOLVERS = ("euler", "heun")


class _HeunStep:
    """The Heun step, mixed into an Euler sampler class (which supplies the loop and ``predict_velocity``)."""

    def advance(self, model, x, t: float, t_prev: float, v, cond, **kwargs):
        """Corrector: the velocity at the Euler step's end, then the trapezoidal rule (module docstring)."""
        h = t - t_prev
        v_end = self.predict_velocity(model, x - h * v, t_prev, cond, **kwargs)
        return x - (0.5 * h) * (v + v_end)


class FlowHeunSampler(_HeunStep, FlowEulerSampler):
    """Heun integration of the learned velocity field (no guidance)."""


class FlowHeunCfgSampler(_HeunStep, FlowEulerCfgSampler):
    """Heun with classifier-free guidance at every velocity evaluation."""


class FlowHeunGuidanceIntervalSampler(_HeunStep, FlowEulerGuidanceIntervalSampler):
    """Heun with CFG only for evaluations at ``cfg_interval[0] <= t <= cfg_interval[1]``."""


#: The Heun sampler of each Euler sampler class (same velocity rule).
HEUN_SAMPLERS = {
    FlowEulerSampler: FlowHeunSampler,
    FlowEulerCfgSampler: FlowHeunCfgSampler,
    FlowEulerGuidanceIntervalSampler: FlowHeunGuidanceIntervalSampler,
}


def heun_counterpart(sampler: Any) -> Any:
    """A Heun sampler with the same velocity rule and ``sigma_min`` as the Euler ``sampler`` (a Heun
    sampler is returned as is).

    Raises:
        ValueError: ``sampler`` is of a class with no Heun counterpart.
    """
    if isinstance(sampler, _HeunStep):
        return sampler
    cls = HEUN_SAMPLERS.get(type(sampler))
    if cls is None:
        raise ValueError(f"no Heun counterpart of {type(sampler).__name__}; "
                         f"known: {', '.join(c.__name__ for c in HEUN_SAMPLERS)}")
    return cls(sigma_min=sampler.sigma_min)


def velocity_evaluations(solver: str, steps: int, rescale_t: float = 1.0, cfg_interval=(0.0, 1.0),
                         guided: bool = True) -> int:
    """Model passes of one sampling run (a guided evaluation is two passes: conditional and
    unconditional, batched or not): what the compute of a stage scales with.

    ``solver`` is ``"euler"`` (one evaluation per step, at t) or ``"heun"`` (two: at t and t_prev).
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    lo, hi = cfg_interval
    grid = time_grid(steps, rescale_t)
    times = [t for t, _ in grid] + ([t_prev for _, t_prev in grid] if solver == "heun" else [])
    return sum(2 if guided and lo <= t <= hi else 1 for t in times)

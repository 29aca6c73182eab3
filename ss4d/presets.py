"""Named sampler presets of ``ss4d-generate --preset`` (and of ``scripts/bench_pipeline.py``).

* ``default`` -- the faithful path: the model folder's sampler settings (25 + 25 Euler steps, CFG on
  the guidance interval [0.5, 1], sequential CFG, K/V recomputed), exactly as with no flag.
* ``fast`` -- :data:`FAST_STEPS` Heun steps per stage (second-order, two velocity evaluations per
  step: :mod:`trellis_ext.pipelines.samplers.flow_heun`), CFG batched into one call, the condition's
  cross-attention K/V cached. With the released settings (rescale_t 3, interval [0.5, 1]) it makes
  21 model passes per stage against the default's 44 (a guided evaluation is two passes; batched
  they are 12 forwards), i.e. under half the compute; the render PSNR against the default is
  measured by ``scripts/bench_quality.py`` (README, "Performance").

Explicit settings override the preset (:func:`resolve_preset`): ``--steps-ss/--steps-slat``,
``--solver``, ``--cfg-batched/--no-cfg-batched``, ``--kv-cache/--no-kv-cache``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

__all__ = ["Preset", "PRESETS", "DEFAULT_PRESET", "FAST_STEPS", "SOLVER_CHOICES", "ResolvedSettings",
           "resolve_preset"]

#: Heun steps per stage of the ``fast`` preset (chosen on the demo clip: ``scripts/bench_quality.py``).
FAST_STEPS = 6
DEFAULT_PRESET = "default"
#: ``--solver`` choices: :data:`trellis_ext.pipelines.samplers.SOLVERS`, repeated here so that the
#: CLI's parser does not import torch (a test checks that the two agree).
SOLVER_CHOICES = ("euler", "heun")


@dataclass(frozen=True)
class Preset:
    """Sampler settings; None = the model folder's own (the faithful path)."""

    name: str
    summary: str
    steps_ss: Optional[int] = None
    steps_slat: Optional[int] = None
    solver: Optional[str] = None          # "euler" | "heun" (None: euler, the folder's)
    cfg_batched: Optional[bool] = None
    kv_cache: Optional[bool] = None


PRESETS: Dict[str, Preset] = {
    "default": Preset("default", "the model folder's sampler settings (faithful path)"),
    "fast": Preset("fast", f"{FAST_STEPS} Heun steps per stage, batched CFG, cached condition K/V",
                   steps_ss=FAST_STEPS, steps_slat=FAST_STEPS, solver="heun", cfg_batched=True, kv_cache=True),
}


@dataclass
class ResolvedSettings:
    """What a run gets: per-stage steps (None: the folder's) and extra sampler parameters (empty for
    the faithful path, so ``--preset default`` is exactly the run without flags)."""

    steps_ss: Optional[int]
    steps_slat: Optional[int]
    sampler_params: Dict[str, Any] = field(default_factory=dict)


def resolve_preset(name: str = DEFAULT_PRESET, steps_ss: Optional[int] = None, steps_slat: Optional[int] = None,
                   solver: Optional[str] = None, cfg_batched: Optional[bool] = None,
                   kv_cache: Optional[bool] = None) -> ResolvedSettings:
    """The preset ``name`` with every explicitly given (non-None) setting winning over it.

    Raises:
        ValueError: an unknown preset name.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    p = PRESETS[name]

    def pick(explicit, preset_value):
        return explicit if explicit is not None else preset_value

    params: Dict[str, Any] = {}
    solver = pick(solver, p.solver)
    if solver not in (None, "euler"):
        params["solver"] = solver
    if pick(cfg_batched, p.cfg_batched):
        params["cfg_mode"] = "batched"
    if pick(kv_cache, p.kv_cache):
        params["kv_cache"] = True
    return ResolvedSettings(pick(steps_ss, p.steps_ss), pick(steps_slat, p.steps_slat), params)

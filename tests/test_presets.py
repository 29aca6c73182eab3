"""ss4d.presets: the named presets resolve to their documented settings; explicit flags win; the
fast preset makes at most about half the default's model passes with the released sampler settings."""
import pytest

from ss4d.presets import DEFAULT_PRESET, FAST_STEPS, PRESETS, SOLVER_CHOICES, resolve_preset
from trellis_ext.pipelines.samplers import SOLVERS, velocity_evaluations

#: The released SS4D sampler settings of both stages (configs / the official pipeline.json).
RELEASED = {"steps": 25, "rescale_t": 3.0, "cfg_interval": (0.5, 1.0)}


def test_default_preset_is_the_faithful_path():
    s = resolve_preset(DEFAULT_PRESET)
    assert (s.steps_ss, s.steps_slat, s.sampler_params) == (None, None, {})


def test_fast_preset_settings():
    s = resolve_preset("fast")
    assert (s.steps_ss, s.steps_slat) == (FAST_STEPS, FAST_STEPS) == (6, 6)
    assert s.sampler_params == {"solver": "heun", "cfg_mode": "batched", "kv_cache": True}


def test_explicit_settings_override_the_preset():
    s = resolve_preset("fast", steps_ss=10, solver="euler", cfg_batched=False, kv_cache=False)
    assert (s.steps_ss, s.steps_slat, s.sampler_params) == (10, FAST_STEPS, {})
    s = resolve_preset("default", steps_slat=3, solver="heun", cfg_batched=True)
    assert (s.steps_ss, s.steps_slat, s.sampler_params) == (None, 3, {"solver": "heun", "cfg_mode": "batched"})


def test_fast_preset_makes_at_most_half_the_model_passes():
    default = velocity_evaluations("euler", RELEASED["steps"], RELEASED["rescale_t"], RELEASED["cfg_interval"])
    fast = velocity_evaluations(PRESETS["fast"].solver, FAST_STEPS, RELEASED["rescale_t"], RELEASED["cfg_interval"])
    assert default == 44          # 25 steps, 19 of them guided (the unconditional pass skipped on 6)
    assert fast == 21 and fast <= default / 2


def test_unknown_preset_and_solver_lists_agree():
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_preset("turbo")
    assert SOLVER_CHOICES == SOLVERS

"""The Heun sampler (trellis_ext.pipelines.samplers.flow_heun) against analytic flows.

* a velocity linear in t and independent of x: the trapezoidal rule is exact (Euler is not);
* a velocity linear in x (dx/dt = λ·x, solution x(0) = x(1)·e^{-λ}): halving the step divides the
  error by ~4 (second order; Euler by ~2);
* the guidance-interval rule is applied per evaluation (passes counted), and the pass count
  matches :func:`velocity_evaluations`.
"""
import math

import pytest
import torch

from trellis_ext.pipelines.samplers import (FlowEulerGuidanceIntervalSampler, FlowEulerSampler,
                                           FlowHeunGuidanceIntervalSampler, FlowHeunSampler, SAMPLERS,
                                           heun_counterpart, time_grid, velocity_evaluations)

LAMBDA = 1.3
A, B = 0.7, -2.1   # v(t) = A + B·t


def _linear_in_t(x, t, cond=None, **_):
    t = t[0].item() / 1000.0
    return torch.full_like(x, A + B * t)


def _linear_in_x(x, t, cond=None, **_):
    return LAMBDA * x


def _error(sampler, model, steps, rescale_t=1.0):
    x1 = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    got = sampler.sample(model, x1, None, steps=steps, rescale_t=rescale_t, keep_trajectory=False).samples
    if model is _linear_in_t:   # x(0) = x(1) - ∫_0^1 v dt
        want = x1 - (A + B / 2)
    else:                       # dx/dt = λx backwards from t = 1 to 0
        want = x1 * math.exp(-LAMBDA)
    return float((got - want).abs().max())


@pytest.mark.parametrize("rescale_t", [1.0, 3.0])
def test_heun_is_exact_for_a_velocity_linear_in_t(rescale_t):
    # exact up to the float32 timestep the models are called with (1000·t)
    assert _error(FlowHeunSampler(), _linear_in_t, 3, rescale_t) < 1e-6
    assert _error(FlowEulerSampler(), _linear_in_t, 3, rescale_t) > 1e-2   # the check can fail


def test_heun_is_second_order_euler_first():
    heun = [_error(FlowHeunSampler(), _linear_in_x, n) for n in (8, 16, 32)]
    euler = [_error(FlowEulerSampler(), _linear_in_x, n) for n in (8, 16, 32)]
    for coarse, fine in zip(heun, heun[1:]):
        assert 3.6 < coarse / fine < 4.4
    for coarse, fine in zip(euler, euler[1:]):
        assert 1.8 < coarse / fine < 2.2
    assert heun[0] < euler[-1]   # 8 Heun steps beat 32 Euler steps here


def test_guidance_interval_rule_per_evaluation():
    """Each evaluation is guided by the rule at its own time: count the unconditional passes."""
    seen = []

    def model(x, t, cond, **_):
        seen.append((round(t[0].item() / 1000.0, 6), float(cond.flatten()[0])))
        return torch.zeros_like(x)

    steps, interval = 4, (0.5, 1.0)
    x = torch.zeros(1, 2)
    cond, neg = torch.ones(1, 1), torch.zeros(1, 1)
    FlowHeunGuidanceIntervalSampler().sample(model, x, cond, steps=steps, neg_cond=neg, cfg_strength=3.0,
                                             cfg_interval=interval, keep_trajectory=False)
    grid = time_grid(steps)
    times = [t for t, _ in grid] + [tp for _, tp in grid]
    unguided = [t for t, c in seen if c == 0.0]
    assert sorted(unguided) == sorted(round(t, 6) for t in times if interval[0] <= t <= interval[1])
    assert len(seen) == velocity_evaluations("heun", steps, 1.0, interval) == 2 * steps + len(unguided)
    assert velocity_evaluations("euler", steps, 1.0, interval) == steps + 3   # t = 1, .75, .5 guided


def test_heun_counterpart_and_registry():
    euler = FlowEulerGuidanceIntervalSampler(sigma_min=1e-4)
    heun = heun_counterpart(euler)
    assert type(heun) is FlowHeunGuidanceIntervalSampler and heun.sigma_min == 1e-4
    assert heun_counterpart(heun) is heun
    assert SAMPLERS["FlowHeunGuidanceIntervalSampler"] is FlowHeunGuidanceIntervalSampler
    with pytest.raises(ValueError, match="Heun counterpart"):
        heun_counterpart(object())
    with pytest.raises(ValueError, match="solver"):
        velocity_evaluations("rk4", 4)

r"""Flow-matching Euler samplers (TRELLIS's definitions).

Convention (the forward process is :mod:`.flow_process`): x_t = (1 - t)·x_0 + (σ_min + (1 - σ_min)·t)·ε,
t ∈ [0, 1] with t = 1 pure noise; the model predicts v and is called with ``1000·t``. The time grid is
linspace(1, 0, steps + 1) warped by t' = s·t / (1 + (s - 1)·t) (s = ``rescale_t``; s > 1 spends more
steps near noise). One Euler step: x_{t_prev} = x_t - (t - t_prev)·v.

Classifier-free guidance: v = (1 + w)·v(cond) - w·v(neg_cond). With a guidance interval
[lo, hi], guidance applies only when lo <= t <= hi; outside it the model is called once, with the
condition only (the unconditional pass is skipped).

Speed options (sampler parameters, off by default = the faithful path):

* ``cfg_mode``: ``"sequential"`` (default: two model calls per guided step) or ``"batched"`` (one
  call on the conditional and unconditional inputs stacked along the batch; dense tensors are
  concatenated, ``SparseTensor``\ s joined with :func:`~trellis_ext.sparse.sparse_cat`). Same
  result within float tolerance; more memory per call, fewer and larger kernels.
* ``kv_cache``: keep the cross-attention keys/values of the condition across steps
  (:func:`~trellis_ext.attention.kv_cache.cross_attention_kv_cache`); exact.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ...attention.kv_cache import cross_attention_kv_cache
from ...sparse import SparseTensor, sparse_cat
from ...sparse.conv import coords_cache_get, coords_cache_put
from .flow_process import SIGMA_MIN, TIMESTEP_SCALE, x0_from_velocity

__all__ = ["FlowEulerSampler", "FlowEulerCfgSampler", "FlowEulerGuidanceIntervalSampler", "SamplerOutput",
           "time_grid", "SAMPLERS", "CFG_MODES"]

#: How the two passes of a guided step are evaluated.
CFG_MODES = ("sequential", "batched")


@dataclass
class SamplerOutput:
    """``samples``: the final x_0; ``pred_x_t[i]``: x after step i; ``pred_x_0[i]``: the x_0
    estimate at step i."""
    samples: Any
    pred_x_t: List[Any] = field(default_factory=list)
    pred_x_0: List[Any] = field(default_factory=list)


def time_grid(steps: int, rescale_t: float = 1.0) -> List[Tuple[float, float]]:
    """[(t, t_prev)] pairs from 1 to 0 after the ``rescale_t`` warp."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if rescale_t <= 0:
        raise ValueError(f"rescale_t must be > 0, got {rescale_t}")
    t = np.linspace(1, 0, steps + 1)
    t = rescale_t * t / (1 + (rescale_t - 1) * t)
    return [(float(t[i]), float(t[i + 1])) for i in range(steps)]


def _batch_size(x) -> int:
    return x.shape[0]


def _device(x) -> torch.device:
    return x.device if hasattr(x, "device") else torch.device("cpu")


def _expand_batch(cond, batch: int):
    if isinstance(cond, torch.Tensor) and cond.shape[0] == 1 and batch > 1:
        return cond.expand(batch, *cond.shape[1:])
    return cond


#: Spatial-cache key of the doubled voxel set of batched CFG (:func:`_stack_pair`).
PAIR_CACHE_KEY = "cfg_pair"


@dataclass
class _PairVoxels:
    """The doubled voxel set of a sparse ``x`` (built once per voxel set, reused at every step)."""

    coords: torch.Tensor     # [2N, 4], the copy's batch indices offset by B
    layout: List[slice]
    batch: int
    cache: dict              # the doubled set's own spatial cache (its neighbour maps, partitions)


def _stack_pair(x):
    """x twice along the batch: [2B, ...] (a SparseTensor: batch indices of the copy offset by B; the
    doubled voxels, their layout and their spatial cache are kept in ``x``'s cache, so a sampler's later
    steps rebuild nothing)."""
    if isinstance(x, SparseTensor):
        pair = coords_cache_get(x, PAIR_CACHE_KEY)
        if pair is None:
            doubled = sparse_cat([x, x])
            pair = _PairVoxels(doubled.coords, doubled.layout, doubled.shape[0], doubled._spatial_cache)
            coords_cache_put(x, PAIR_CACHE_KEY, pair)
        feats = torch.cat([x.feats, x.feats], 0)
        return SparseTensor(feats, pair.coords, shape=(pair.batch,) + tuple(feats.shape[1:]), layout=pair.layout,
                            scale=x._scale, spatial_cache=pair.cache)
    return torch.cat([x, x], 0)


def _split_pair(out, like):
    """Inverse of :func:`_stack_pair` on a model output: (first half, second half), shaped like ``like``."""
    if isinstance(out, SparseTensor):
        n = like.feats.shape[0]
        return like.replace(out.feats[:n]), like.replace(out.feats[n:])
    b = like.shape[0]
    return out[:b], out[b:]


class FlowEulerSampler:
    """Plain Euler integration of the learned velocity field (no guidance)."""

    def __init__(self, sigma_min: float = SIGMA_MIN):
        self.sigma_min = sigma_min

    # ---- conversions -----------------------------------------------------------------
    def v_to_x0(self, x_t, t: float, v):
        """x_0 = (1 - σ)·x_t - (σ + (1 - σ)·t)·v."""
        return x0_from_velocity(x_t, t, v, self.sigma_min)

    # ---- model call ------------------------------------------------------------------
    def _call(self, model: Callable, x_t, t: float, cond, **kwargs):
        tt = torch.full((_batch_size(x_t),), TIMESTEP_SCALE * t, dtype=torch.float32, device=_device(x_t))
        return model(x_t, tt, _expand_batch(cond, _batch_size(x_t)), **kwargs)

    def predict_velocity(self, model, x_t, t: float, cond, **kwargs):
        return self._call(model, x_t, t, cond, **kwargs)

    # ---- loop ------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, model: Callable, noise, cond=None, steps: int = 50, rescale_t: float = 1.0,
               verbose: bool = False, callback: Optional[Callable[[int, Any], None]] = None,
               desc: str = "Sampling", keep_trajectory: bool = True, kv_cache: bool = False,
               **kwargs) -> SamplerOutput:
        """Integrate from ``noise`` (t = 1) to t = 0.

        Extra ``kwargs`` (neg_cond, cfg_strength, cfg_interval, cfg_mode, model kwargs like
        num_frames) go to ``predict_velocity``. ``verbose`` shows a tqdm bar labelled ``desc``;
        ``callback(i, x)`` runs after each step. ``keep_trajectory=False`` leaves ``pred_x_t`` /
        ``pred_x_0`` empty (saves memory on long runs). ``kv_cache=True`` reuses the cross-attention
        keys/values of the condition across steps (exact; see the module docstring).
        """
        with cross_attention_kv_cache() if kv_cache else contextlib.nullcontext():
            return self._sample(model, noise, cond, steps, rescale_t, verbose, callback, desc, keep_trajectory,
                                **kwargs)

    def advance(self, model, x, t: float, t_prev: float, v, cond, **kwargs):
        """x at ``t_prev`` from x at ``t`` and the velocity ``v`` there: the Euler step ``x - (t - t_prev)·v``
        (the Heun samplers add a corrector evaluation here)."""
        return x - (t - t_prev) * v

    def _sample(self, model, noise, cond, steps, rescale_t, verbose, callback, desc, keep_trajectory,
                **kwargs) -> SamplerOutput:
        from tqdm.auto import tqdm

        x = noise
        out = SamplerOutput(samples=None)
        for i, (t, t_prev) in enumerate(tqdm(time_grid(steps, rescale_t), desc=desc, disable=not verbose)):
            v = self.predict_velocity(model, x, t, cond, **kwargs)
            if keep_trajectory:
                out.pred_x_0.append(self.v_to_x0(x, t, v))
            x = self.advance(model, x, t, t_prev, v, cond, **kwargs)
            if keep_trajectory:
                out.pred_x_t.append(x)
            if callback is not None:
                callback(i, x)
        out.samples = x
        return out


class FlowEulerCfgSampler(FlowEulerSampler):
    """Euler sampler with classifier-free guidance at every step."""

    def predict_velocity(self, model, x_t, t: float, cond, neg_cond=None, cfg_strength: float = 3.0,
                         cfg_mode: str = "sequential", **kwargs):
        if cfg_mode not in CFG_MODES:
            raise ValueError(f"cfg_mode must be one of {CFG_MODES}, got {cfg_mode!r}")
        if neg_cond is None or cfg_strength == 0:
            return self._call(model, x_t, t, cond, **kwargs)
        if cfg_mode == "batched":
            b = _batch_size(x_t)
            both = torch.cat([_expand_batch(cond, b), _expand_batch(neg_cond, b)], 0)
            pos, neg = _split_pair(self._call(model, _stack_pair(x_t), t, both, **kwargs), x_t)
        else:
            pos = self._call(model, x_t, t, cond, **kwargs)
            neg = self._call(model, x_t, t, neg_cond, **kwargs)
        return (1 + cfg_strength) * pos - cfg_strength * neg


class FlowEulerGuidanceIntervalSampler(FlowEulerCfgSampler):
    """CFG only while ``cfg_interval[0] <= t <= cfg_interval[1]``."""

    def predict_velocity(self, model, x_t, t: float, cond, neg_cond=None, cfg_strength: float = 3.0,
                         cfg_interval: Sequence[float] = (0.0, 1.0), cfg_mode: str = "sequential", **kwargs):
        lo, hi = cfg_interval
        if lo <= t <= hi:
            return super().predict_velocity(model, x_t, t, cond, neg_cond, cfg_strength, cfg_mode, **kwargs)
        return self._call(model, x_t, t, cond, **kwargs)


SAMPLERS = {
    "FlowEulerSampler": FlowEulerSampler,
    "FlowEulerCfgSampler": FlowEulerCfgSampler,
    "FlowEulerGuidanceIntervalSampler": FlowEulerGuidanceIntervalSampler,
}

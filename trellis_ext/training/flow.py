"""The flow-matching objective's random draws (TRELLIS's trainer, one t and one CFG decision per clip).

* ``t ~ logitNormal(mean, std)``: ``t = sigmoid(mean + std·n)``, n ~ N(0, 1) (TRELLIS's configs use
  mean 1, std 1: biased towards noise, t = 1 being pure noise).
* Clips of T frames are folded into rows ``b·T + t`` (see ``ss4d.frames``); :func:`per_clip_t` draws one t
  per clip and repeats it over the clip's rows, as the samplers give every frame the same t.
* Classifier-free guidance dropout: with probability ``p_uncond`` a clip's condition is replaced by the
  negative condition (zeros) — per clip, so all its frames agree (:func:`cfg_drop_mask`,
  :func:`apply_cfg_drop`).
* Every draw comes from a :func:`keyed_generator` (a ``torch.Generator`` seeded from a key such as
  (seed, step, rank, micro-batch)), so a resumed run draws exactly what an uninterrupted one does.

The forward process itself (``x_t``, target ``v``) is :mod:`trellis_ext.pipelines.samplers.flow_process`.
"""
from __future__ import annotations

import hashlib
from typing import Tuple

import torch
import torch.nn.functional as F

from ..pipelines.samplers.flow_process import SIGMA_MIN, diffuse, model_time, velocity_target

__all__ = ["keyed_seed", "keyed_generator", "logit_normal_t", "per_clip_t", "cfg_drop_mask", "apply_cfg_drop",
           "flow_training_pair", "dense_flow_loss", "sparse_flow_loss", "DEFAULT_T_MEAN", "DEFAULT_T_STD", "DEFAULT_P_UNCOND"]

DEFAULT_T_MEAN = 1.0     # TRELLIS configs: logitNormal(1, 1)
DEFAULT_T_STD = 1.0
DEFAULT_P_UNCOND = 0.1   # TRELLIS: 10 % of conditions dropped
SEED_BYTES = 8


def keyed_seed(*key: int) -> int:
    """A 63-bit seed derived from integers (stable across processes and Python versions)."""
    digest = hashlib.sha256(",".join(str(int(k)) for k in key).encode()).digest()
    return int.from_bytes(digest[:SEED_BYTES], "little") & ((1 << 63) - 1)


def keyed_generator(*key: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded by :func:`keyed_seed` of ``key``."""
    return torch.Generator(device=device).manual_seed(keyed_seed(*key))


def logit_normal_t(n: int, generator: torch.Generator, mean: float = DEFAULT_T_MEAN, std: float = DEFAULT_T_STD
                   ) -> torch.Tensor:
    """[n] float32 times in (0, 1): sigmoid(mean + std·N(0, 1))."""
    return torch.sigmoid(mean + std * torch.randn(n, generator=generator))


def per_clip_t(num_clips: int, num_frames: int, generator: torch.Generator, mean: float = DEFAULT_T_MEAN,
               std: float = DEFAULT_T_STD) -> torch.Tensor:
    """One t per clip repeated over its frames: [B·T] (row b·T + t holds clip b's t)."""
    return logit_normal_t(num_clips, generator, mean, std).repeat_interleave(num_frames)


def cfg_drop_mask(num_clips: int, p_uncond: float, generator: torch.Generator) -> torch.Tensor:
    """[B] bool: True where a clip's condition is dropped (probability ``p_uncond``)."""
    return torch.rand(num_clips, generator=generator) < p_uncond


def apply_cfg_drop(cond: torch.Tensor, drop: torch.Tensor, num_frames: int, neg_cond: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """cond [B·T, ...] with the rows of dropped clips (``drop`` [B]) replaced by ``neg_cond`` (zeros)."""
    rows = drop.to(cond.device).repeat_interleave(num_frames)
    neg = torch.zeros_like(cond) if neg_cond is None else neg_cond.expand_as(cond)
    return torch.where(rows.reshape(-1, *([1] * (cond.dim() - 1))), neg, cond)


def flow_training_pair(x_0: torch.Tensor, noise: torch.Tensor, t_rows: torch.Tensor, sigma_min: float = SIGMA_MIN
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(x_t, target v) for x_0 / noise [R, ...] and per-row t [R] (rows of a dense batch, or the per-voxel
    rows of sparse features with t gathered per voxel)."""
    t = t_rows.to(x_0.dtype).reshape(-1, *([1] * (x_0.dim() - 1)))
    return diffuse(x_0, noise, t, sigma_min), velocity_target(x_0, noise, sigma_min)



def dense_flow_loss(model, x_0: torch.Tensor, noise: torch.Tensor, t_rows: torch.Tensor, cond: torch.Tensor,
                    sigma_min: float = SIGMA_MIN, **model_kwargs) -> torch.Tensor:
    """TRELLIS's flow loss on a dense batch: MSE(model(x_t, 1000·t, cond), v) over all elements.

    x_0 / noise [R, C, ...], t_rows [R], cond [R, L, C_cond]; ``model_kwargs`` (e.g. ``num_frames``) go to
    the model."""
    x_t, target = flow_training_pair(x_0, noise, t_rows, sigma_min)
    pred = model(x_t, model_time(t_rows).to(x_0.device), cond, **model_kwargs)
    return F.mse_loss(pred.float(), target.float())


def sparse_flow_loss(model, x_0, noise: torch.Tensor, t_rows: torch.Tensor, cond: torch.Tensor,
                     sigma_min: float = SIGMA_MIN, **model_kwargs) -> torch.Tensor:
    """The same on a ``SparseTensor`` x_0 (feats [N, C], batch rows R): t is gathered per voxel; the MSE is
    over every voxel of the batch (TRELLIS's sparse trainer)."""
    from ..sparse import sparse_batch_broadcast

    t_vox = sparse_batch_broadcast(x_0, t_rows.to(x_0.feats.device))
    x_t, target = flow_training_pair(x_0.feats, noise, t_vox, sigma_min)
    pred = model(x_0.replace(x_t), model_time(t_rows).to(x_0.feats.device), cond, **model_kwargs)
    return F.mse_loss(pred.feats.float(), target.float())

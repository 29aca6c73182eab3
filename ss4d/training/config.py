"""Training configuration: one JSON file ``{stage, models, init, dataset, conditioning, trainer, progressive, loss}``.

Fields (defaults in brackets; ``docs/training.md`` has the full table):

* ``stage``: ``ss_flow | slat_vae | slat_flow | ss_vae``.
* ``models``: ``{key: {"name": class, "args": {...}}}`` built for ``init: "scratch"`` (keys per stage:
  ``denoiser`` for the flows, ``encoder`` + ``decoder`` for the VAEs).
* ``init``: ``scratch`` | ``trellis:<folder>`` (inflate TRELLIS weights) | ``ss4d:<folder>`` (an SS4D
  pipeline folder) | ``run:<dir>`` (the newest checkpoint of another run); overridable with ``--init``.
* ``dataset``: ``ss_encoder`` (SS latent set; ss_flow), ``feature_set`` (slat_vae), ``latent_set``
  (slat_flow), ``max_frame`` [36] (windows only inside the first N frames), ``strides`` [[1]],
  ``cond_source`` [``renders``: one random view shared by the clip's frames | ``cond``: the fixed camera],
  ``val_clips`` [[]] (clip ids held out for evaluation), ``max_voxels`` [0 = no limit], ``mirror`` [off]
  (:class:`~ss4d.training.mirror.MirrorConfig`; ``ss_flow`` only), ``cond_crop`` [``window``: the crop around the
  window's frames | ``clip``: around all the clip's frames; :mod:`ss4d.training.data`].
* ``conditioning``: ``encoder`` [``tiny-random``] (``ss4d.conditioning.resolve`` override: a DINOv2
  folder/checkpoint or ``tiny-random``; or ``run:<dir>``, the encoder a run trained), ``train_encoder`` [false]
  (train it with the flow, :mod:`ss4d.training.cond_encoder`), ``mask`` (:class:`MaskConfig`), ``color``
  (:class:`ColorConfig`; off by default; refused for ``slat_flow``, whose target carries the colours).
* ``trainer``: ``lr`` [1e-4], ``weight_decay`` [0], ``betas``, ``mixed_precision`` [``bf16``|``fp16``|``no``],
  ``ema_rates`` [[0.9999]], ``grad_clip`` {max_norm 1, percentile 95, buffer 1000}, ``p_uncond`` [0.1],
  ``t_mean``/``t_std`` [1, 1], ``checkpoint_every`` [1000], ``keep_last`` [3], ``eval_every`` [0 = off],
  ``num_workers`` [0], ``gradient_checkpointing`` [false], ``find_unused_parameters`` [false] (DDP; true only for
  ``conv_type: "non"`` SLat flows), ``seed`` [0], ``lr_schedule`` [constant] (warm-up and decay,
  :class:`~ss4d.training.lr_schedule.LRSchedule`).
* ``progressive``: phases ``[{frames, steps, batch_size, micro_batches}]`` run in order; the phase of a
  step is a pure function of the step (:meth:`TrainConfig.phase_at`).
* ``loss``: VAE weights (``l1, ssim, lpips, kl, volume, opacity``; TRELLIS's defaults), ``lpips_weights``
  (a local VGG16 file for issue 10's LPIPS), ``render_resolution``, ``background`` [``random``]; ``bce`` [1], ``dice`` [0], ``kl`` for ``ss_vae``.

Fields that do not change the run's results (``checkpoint_every``, ``keep_last``, ``eval_every``,
``num_workers``) may change on resume; any other change is refused unless
``--allow-config-change``.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

from .data import COND_CROPS
from .errors import TrainingInputError
from .lr_schedule import LRSchedule
from .mirror import MirrorConfig

__all__ = ["TrainConfig", "Phase", "STAGE_NAMES", "RESUME_SAFE_KEYS", "load_config", "DEFAULT_MAX_FRAME"]

STAGE_NAMES = ("ss_flow", "slat_vae", "slat_flow", "ss_vae")
DEFAULT_MAX_FRAME = 36  # SS4D: the first 36 frames of each animation
RESUME_SAFE_KEYS = ("checkpoint_every", "keep_last", "eval_every", "num_workers")
MIXED_PRECISION = ("no", "bf16", "fp16")
#: stages whose target carries the object's colours: a colour change of the conditioning frames alone
#: (``conditioning.color``) would teach them to ignore the input's colours
COLOR_TARGET_STAGES = ("slat_flow",)
#: stages with mirrored targets on disk (``dataset.mirror``: SS latents of mirrored voxels, ``--ss-mirror``)
MIRROR_STAGES = ("ss_flow",)

TRAINER_DEFAULTS: Dict[str, Any] = {
    "seed": 0, "lr": 1e-4, "weight_decay": 0.0, "betas": [0.9, 0.999], "mixed_precision": "bf16",
    "ema_rates": [0.9999], "grad_clip": {"max_norm": 1.0, "percentile": 95.0, "buffer": 1000},
    "p_uncond": 0.1, "t_mean": 1.0, "t_std": 1.0, "checkpoint_every": 1000, "keep_last": 3,
    "eval_every": 0, "num_workers": 0, "gradient_checkpointing": False, "find_unused_parameters": False,
}
DATASET_DEFAULTS: Dict[str, Any] = {"max_frame": DEFAULT_MAX_FRAME, "strides": [1], "cond_source": "renders",
                                    "val_clips": [], "max_voxels": 0}
COND_DEFAULTS: Dict[str, Any] = {"encoder": "tiny-random", "mask": {}}
LOSS_DEFAULTS: Dict[str, Any] = {"l1": 1.0, "ssim": 0.2, "lpips": 0.2, "kl": 1e-6, "volume": 1e4, "opacity": 1e-3,
                                 "lpips_weights": None, "render_resolution": 0, "background": "random",
                                 "bce": 1.0, "dice": 0.0}


@dataclass(frozen=True)
class Phase:
    """One block of the progressive schedule: ``frames`` per clip, ``steps`` optimizer steps,
    ``batch_size`` clips per process per step, split into ``micro_batches`` (gradient accumulation)."""

    frames: int
    steps: int
    batch_size: int
    micro_batches: int = 1

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // self.micro_batches


def _merge(defaults: Dict[str, Any], given: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(defaults)
    for k, v in (given or {}).items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else copy.deepcopy(v)
    return out


class TrainConfig:
    """A validated training config (``raw`` is the JSON as written to ``RUN/config.json``)."""

    def __init__(self, raw: Dict[str, Any], source: str = "config"):
        self.source = source
        raw = copy.deepcopy(raw)
        stage = raw.get("stage")
        if stage not in STAGE_NAMES:
            raise TrainingInputError(f"{source}: unknown stage {stage!r}", f"use one of {', '.join(STAGE_NAMES)}")
        raw["trainer"] = _merge(TRAINER_DEFAULTS, raw.get("trainer", {}))
        raw["dataset"] = _merge(DATASET_DEFAULTS, raw.get("dataset", {}))
        raw["conditioning"] = _merge(COND_DEFAULTS, raw.get("conditioning", {}))
        raw["loss"] = _merge(LOSS_DEFAULTS, raw.get("loss", {}))
        raw.setdefault("models", {})
        raw.setdefault("init", "scratch")
        self.raw = raw
        self.phases = self._phases(raw.get("progressive"))
        if raw["trainer"]["mixed_precision"] not in MIXED_PRECISION:
            raise TrainingInputError(f"{source}: trainer.mixed_precision {raw['trainer']['mixed_precision']!r}",
                                     f"use one of {', '.join(MIXED_PRECISION)}")
        if stage in COLOR_TARGET_STAGES and float((raw["conditioning"].get("color") or {}).get("prob", 0)) > 0:
            raise TrainingInputError(
                f"{source}: conditioning.color is on for the {stage} stage",
                "its target carries the object's colours and the colour change leaves them as they are, so the model "
                "would learn to ignore the input's colours; remove conditioning.color (it is for the structure flow)")
        if stage not in MIRROR_STAGES and MirrorConfig.from_dict(raw["dataset"].get("mirror")).enabled:
            raise TrainingInputError(
                f"{source}: dataset.mirror is on for the {stage} stage",
                "only the structure flow has mirrored targets (SS latents of mirrored voxels); remove dataset.mirror")
        self.lr_schedule = LRSchedule.from_dict(raw["trainer"].get("lr_schedule"), source)
        if raw["dataset"].get("cond_crop", COND_CROPS[0]) not in COND_CROPS:   # absent: the default (older hashes)
            raise TrainingInputError(f"{source}: dataset.cond_crop {raw['dataset']['cond_crop']!r}",
                                     "use 'window' (crop around the window's frames) or 'clip' (around all the "
                                     "clip's frames)")
        if raw["dataset"]["cond_source"] not in ("renders", "cond"):
            raise TrainingInputError(f"{source}: dataset.cond_source {raw['dataset']['cond_source']!r}",
                                     "use 'renders' (a random view per clip) or 'cond' (the fixed front camera)")

    def _per_frame_model(self, key: str) -> bool:
        """models.<key> names a per-frame 3D class (3D pretraining: any frame count)."""
        from ..models.per_frame import PER_FRAME_CLASSES

        return self.raw.get("models", {}).get(key, {}).get("name") in PER_FRAME_CLASSES

    def _phases(self, spec) -> List[Phase]:
        if not spec:
            raise TrainingInputError(f"{self.source}: no 'progressive' phases",
                                     'add e.g. "progressive": [{"frames": 8, "steps": 1000, "batch_size": 2}]')
        phases = []
        for i, p in enumerate(spec):
            try:
                ph = Phase(int(p["frames"]), int(p["steps"]), int(p.get("batch_size", 1)), int(p.get("micro_batches", 1)))
            except (KeyError, TypeError, ValueError) as e:
                raise TrainingInputError(f"{self.source}: progressive[{i}] is malformed ({e})",
                                         "each phase needs integer frames, steps, batch_size (micro_batches optional)")
            if ph.frames < 1 or ph.steps < 1 or ph.batch_size < 1 or ph.micro_batches < 1 \
                    or ph.batch_size % ph.micro_batches:
                raise TrainingInputError(f"{self.source}: progressive[{i}] = {p} is invalid",
                                         "frames/steps/batch_size >= 1 and batch_size divisible by micro_batches")
            if self.stage == "slat_flow" and ph.frames % 2 and not self._per_frame_model("denoiser"):
                raise TrainingInputError(f"{self.source}: progressive[{i}] has {ph.frames} frames, but the SLat flow "
                                         "packs frames in pairs", "use an even number of frames (e.g. 8, 16, 32)")
            phases.append(ph)
        return phases

    # ------------------------------------------------------------------ accessors
    @property
    def stage(self) -> str:
        return self.raw["stage"]

    @property
    def trainer(self) -> Dict[str, Any]:
        return self.raw["trainer"]

    @property
    def dataset(self) -> Dict[str, Any]:
        return self.raw["dataset"]

    @property
    def conditioning(self) -> Dict[str, Any]:
        return self.raw["conditioning"]

    @property
    def loss(self) -> Dict[str, Any]:
        return self.raw["loss"]

    @property
    def models(self) -> Dict[str, Any]:
        return self.raw["models"]

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based): ``trainer.lr`` times the schedule's factor."""
        return float(self.trainer["lr"]) * self.lr_schedule.factor(step, self.total_steps)

    def phase_at(self, step: int) -> Tuple[int, Phase, int]:
        """(phase index, phase, first step of the phase) of optimizer step ``step`` (0-based). Steps past
        the schedule stay in the last phase."""
        start = 0
        for i, p in enumerate(self.phases):
            if step < start + p.steps or i == len(self.phases) - 1:
                return i, p, start
            start += p.steps
        raise AssertionError("unreachable")

    def base_position(self, step: int, world_size: int) -> int:
        """Global sample position of step ``step``'s first sample (all ranks): Σ batch·world over earlier steps."""
        pos, start = 0, 0
        for i, p in enumerate(self.phases):
            last = i == len(self.phases) - 1
            n = step - start if last else min(p.steps, max(0, step - start))
            pos += n * p.batch_size * world_size
            start += p.steps
            if step < start:
                break
        return pos

    def hash(self) -> str:
        """sha256 of the config without the resume-safe trainer keys."""
        raw = copy.deepcopy(self.raw)
        for k in RESUME_SAFE_KEYS:
            raw["trainer"].pop(k, None)
        return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()

    def to_json(self) -> str:
        return json.dumps(self.raw, indent=2, sort_keys=True)


def load_config(path: str | Path, overrides: Dict[str, Any] | None = None) -> TrainConfig:
    """Read a JSON config (clear errors for a missing / malformed file); ``overrides`` set top-level or
    ``trainer`` keys (e.g. ``{"trainer": {"seed": 3}, "init": "scratch"}``)."""
    path = Path(path)
    if not path.is_file():
        raise TrainingInputError(f"config not found: {path}", "pass a JSON file, e.g. configs/train/tiny_ss_flow.json")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TrainingInputError(f"{path} is not valid JSON ({e})", "fix the file") from None
    if not isinstance(raw, dict):
        raise TrainingInputError(f"{path} must hold a JSON object", "see configs/train/ for examples")
    if overrides:
        raw = _merge(raw, overrides)
    return TrainConfig(raw, source=str(path))

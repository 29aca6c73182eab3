"""What every training stage provides, and the pieces shared by all of them.

A :class:`Stage` knows its trainable models (``model_keys``), what a sample holds (:meth:`Stage.load`,
:meth:`Stage.collate`) and its objective (:meth:`Stage.objective`). The loop (:mod:`ss4d.training.loop`)
wraps the models in :class:`TrainModule` — the one ``nn.Module`` Accelerate prepares (DDP/FSDP) — whose
``forward(batch, key)`` runs the objective with a generator keyed by ``key`` = (seed, step, rank, micro).
:class:`StageDataset` maps the sampler's keys ``(step, slot, item)`` to samples.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from trellis_ext.training.flow import keyed_generator

from ..data.layout import DatasetReader
from .config import TrainConfig
from .data import COND_CROPS, ClipIndex, ClipInfo, conditioning_frames, sample_rng
from .color_augment import ColorConfig
from .errors import TrainingInputError
from .cond_encoder import COND_ENCODER_KEY, trains_encoder
from .mirror import MirrorConfig, draw_mirror
from .masking import MaskConfig

__all__ = ["Stage", "TrainModule", "StageDataset", "set_gradient_checkpointing", "Batch"]

Batch = Dict[str, Any]


def set_gradient_checkpointing(model: nn.Module, enabled: bool) -> None:
    """Switch TRELLIS-style ``use_checkpoint`` flags on every submodule that has one."""
    for m in model.modules():
        if hasattr(m, "use_checkpoint"):
            m.use_checkpoint = bool(enabled)


class Stage:
    """Base class (see the module docstring). Subclasses set ``name``, ``model_keys``, ``needs_cond``,
    ``expected_classes`` and ``export`` (model key -> (pipeline key or None, checkpoint stem))."""

    name = "stage"
    model_keys: Tuple[str, ...] = ()
    needs_cond = False
    expected_classes: Dict[str, Tuple[str, ...]] = {}
    export: Dict[str, Tuple[Optional[str], str]] = {}
    #: where ``--init trellis:`` / ``ss4d:`` folders keep each model: pipeline.json key, or fallback stems
    folder_keys: Dict[str, Tuple[Optional[str], Tuple[str, ...]]] = {}

    def __init__(self, cfg: TrainConfig, reader: DatasetReader, source: str = "dataset"):
        self.cfg, self.reader, self.source = cfg, reader, source
        self.mask = MaskConfig.from_dict(cfg.conditioning.get("mask"))
        self.color = ColorConfig.from_dict(cfg.conditioning.get("color"))
        self.mirror = MirrorConfig.from_dict(cfg.dataset.get("mirror"))
        self.cond_encoder = None
        if trains_encoder(cfg.conditioning) and not self.needs_cond:
            raise TrainingInputError(f"{cfg.source}: conditioning.train_encoder is on for the {self.name} stage, "
                                     "which has no condition encoder", "remove it (it is for the flows)")
        self.index = ClipIndex(reader, self.requires(), cfg.dataset["max_frame"], cfg.dataset["strides"],
                               source=source, exclude=cfg.dataset["val_clips"])
        self._clip_infos = {c.clip_id: c for c in self.index.clips + self.index.held_out}
        self._bbox_cache: Dict[tuple, tuple] = {}     # dataset.cond_crop "clip": (clip, view, mirrored) -> bbox

    # ---------------------------------------------------------------- data
    def requires(self) -> Dict[str, Optional[str]]:
        """{clip record kind: set name} the stage needs (see :class:`ClipIndex`)."""
        return {}

    def load(self, window, rng: np.random.Generator) -> Dict[str, Any]:
        raise NotImplementedError

    def collate(self, samples: Sequence[Dict[str, Any]]) -> Batch:
        raise NotImplementedError

    def run_info(self) -> Dict[str, Any]:
        """Facts the export needs (e.g. latent statistics); written to ``RUN/stage.json``."""
        return {}

    # ---------------------------------------------------------------- models
    def setup(self, device: torch.device) -> None:
        """Load the condition encoder onto ``device`` (frozen, or trainable with ``conditioning.train_encoder``)."""
        if self.needs_cond and self.cond_encoder is None:
            from .cond_encoder import load_stage_encoder

            self.cond_encoder = load_stage_encoder(self.cfg.conditioning, device)
        elif self.cond_encoder is not None:
            self.cond_encoder.to(device)

    def check_models(self, models: Dict[str, nn.Module], sample: Dict[str, Any]) -> None:
        """Raise :class:`~ss4d.training.errors.TrainingInputError` when the models do not fit the data."""

    def objective(self, models: nn.ModuleDict, batch: Batch, gen: torch.Generator, train: bool = True
                  ) -> Tuple[torch.Tensor, Dict[str, float]]:
        raise NotImplementedError

    # ---------------------------------------------------------------- shared helpers
    @property
    def trains_cond_encoder(self) -> bool:
        """The condition encoder trains with the models (``conditioning.train_encoder``)."""
        return self.needs_cond and trains_encoder(self.cfg.conditioning)

    def encode_cond(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        """[B·T, 3, H, W] conditioning frames -> tokens [B·T, L, C]; with autograd where the encoder trains."""
        if self.trains_cond_encoder and torch.is_grad_enabled():
            return self.cond_encoder(images.to(device)).float()
        with torch.no_grad():
            return self.cond_encoder.encode(images.to(device)).float()

    def cond_images(self, window, rng: np.random.Generator, augment: bool) -> torch.Tensor:
        """The window's conditioning frames, cropped as ``dataset.cond_crop`` says (:mod:`ss4d.training.data`)."""
        info = self._clip_infos.get(window.clip_id)
        return conditioning_frames(self.reader, window, self.cfg.dataset["cond_source"], self.mask, rng, augment,
                                   self.color, crop=self.cfg.dataset.get("cond_crop", COND_CROPS[0]),
                                   clip_frames=int(info.record["num_frames"]) if info else 0,
                                   bbox_cache=self._bbox_cache)


class TrainModule(nn.Module):
    """The trainable models of a stage plus its objective: ``forward(batch, key, train)`` -> (loss, logs)."""

    def __init__(self, stage: Stage, models: Dict[str, nn.Module]):
        super().__init__()
        self.models = nn.ModuleDict(models)
        self.stage = stage
        if stage.trains_cond_encoder:      # registered after the models: the optimizer, EMA and checkpoints hold it
            setattr(self, COND_ENCODER_KEY, stage.cond_encoder)

    def forward(self, batch: Batch, key: Sequence[int], train: bool = True):
        gen = keyed_generator(*key)
        return self.stage.objective(self.models, batch, gen, train=train)


class StageDataset(torch.utils.data.Dataset):
    """Keys ``(step, slot, item)`` -> samples of ``frames`` frames from ``clips[item]``."""

    def __init__(self, stage: Stage, clips: List[ClipInfo], frames: int, seed: int, rank: int, augment: bool = True):
        self.stage, self.clips, self.frames = stage, clips, frames
        self.seed, self.rank, self.augment = seed, rank, augment

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key):
        step, slot, item = key
        rng = sample_rng(self.seed, step, self.rank, slot)
        window = self.stage.index.window(self.clips[item], self.frames, rng)
        if self.augment and draw_mirror(self.stage.mirror, rng):
            window = replace(window, mirrored=True)
        sample = self.stage.load(window, rng)
        if self.stage.needs_cond:
            sample["cond_images"] = self.stage.cond_images(window, rng, self.augment)
        sample["window"] = (window.clip_id, window.frames)
        return sample

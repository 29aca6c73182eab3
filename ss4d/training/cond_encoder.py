"""The condition encoder of a training run: frozen (TRELLIS, SS4D), trained with the flow, or trained by another run.

``conditioning.encoder`` names where the encoder starts: anything :func:`~ss4d.conditioning.resolve.
load_condition_encoder` takes (``small-sincos``, a DINOv2 folder, ...) or ``run:<dir>``, the encoder a
run trained (the first EMA rate at its newest complete checkpoint). ``conditioning.train_encoder`` [false] trains
it together with the flow: it sits in the :class:`~ss4d.training.stage.TrainModule` under
:data:`COND_ENCODER_KEY`, so the optimizer, the EMA, DDP and the checkpoints hold it like the flow itself.

The small model trains its random encoder with the 3D structure flow and every later run conditions on that run's
encoder, frozen (``run:``), so all flows of the exported pipeline share one encoder, as in the released one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from torch import nn

from .errors import TrainingInputError

__all__ = ["COND_ENCODER_KEY", "RUN_PREFIX", "trains_encoder", "load_encoder", "load_run_encoder",
           "load_stage_encoder", "encoder_source"]

COND_ENCODER_KEY = "cond_encoder"   # state-dict prefix "cond_encoder." in checkpoints and ema.safetensors
RUN_PREFIX = "run:"


def trains_encoder(conditioning: dict) -> bool:
    """``conditioning.train_encoder`` (absent: false, so older configs keep their hash)."""
    value = conditioning.get("train_encoder", False)
    if not isinstance(value, bool):
        raise TrainingInputError(f"conditioning.train_encoder must be true or false, got {value!r}",
                                 'e.g. "train_encoder": true')
    return value


def _trained_in(run: Path) -> dict:
    from .loop import CONFIG_FILE

    cfg_file = Path(run) / CONFIG_FILE
    if not cfg_file.is_file():
        raise TrainingInputError(f"conditioning.encoder run:{run}: not an ss4d-train run (no {CONFIG_FILE})",
                                 "give the --output folder of the run that trained the encoder")
    conditioning = json.loads(cfg_file.read_text()).get("conditioning", {})
    if not trains_encoder(conditioning):
        raise TrainingInputError(f"conditioning.encoder run:{run}: that run did not train its condition encoder",
                                 "name the encoder it used instead, or a run with conditioning.train_encoder")
    return conditioning


def load_run_encoder(run: Path, device="cpu") -> nn.Module:
    """The encoder ``run`` trained: its starting encoder with the EMA weights of its newest complete checkpoint."""
    from safetensors.torch import load_file

    from trellis_ext.training.checkpoint import latest_complete

    from .loop import CHECKPOINT_DIR, EMA_FILE

    run = Path(run)
    encoder = load_encoder(_trained_in(run)["encoder"], device)
    ckpt = latest_complete(run / CHECKPOINT_DIR)
    if ckpt is None:
        raise TrainingInputError(f"conditioning.encoder run:{run}: the run has no complete checkpoint yet",
                                 "train it for at least checkpoint_every steps")
    prefix = COND_ENCODER_KEY + "."
    state = {k[len(prefix):]: v for k, v in load_file(str(ckpt / EMA_FILE)).items() if k.startswith(prefix)}
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise TrainingInputError(f"conditioning.encoder run:{run}: its encoder weights do not fit "
                                 f"({str(e).splitlines()[0]})", "check the run's checkpoint") from None
    return encoder.to(device).requires_grad_(False).eval()


def load_encoder(name: str, device="cpu") -> nn.Module:
    """The encoder ``name`` (a ``conditioning.encoder`` value or an :func:`encoder_source`), frozen, eval mode."""
    if str(name).startswith(RUN_PREFIX):
        return load_run_encoder(Path(str(name)[len(RUN_PREFIX):]), device)
    from ..conditioning.resolve import load_condition_encoder

    return load_condition_encoder(".", override=name, device=device)[0].requires_grad_(False).eval()


def load_stage_encoder(conditioning: dict, device="cpu") -> nn.Module:
    """The encoder a run conditions on: frozen in eval mode, or ready to train (``conditioning.train_encoder``)."""
    from ..conditioning.dinov2 import DINOv2Encoder

    encoder = load_encoder(conditioning["encoder"], device)
    if not trains_encoder(conditioning):
        return encoder
    if not isinstance(encoder, DINOv2Encoder):
        raise TrainingInputError(f"conditioning.train_encoder: {conditioning['encoder']!r} is a "
                                 f"{type(encoder).__name__}, only a DINOv2 encoder can be trained",
                                 "use a DINOv2 encoder (small-sincos, tiny-random or a DINOv2 folder)")
    return encoder.train_for_conditioning()


def encoder_source(run: Path, conditioning: dict) -> Optional[str]:
    """What conditions ``run``'s models once trained, comparable across runs (:func:`load_encoder` loads it):
    ``run:<absolute dir>`` for a trained encoder (this run's or another's), else the encoder's name."""
    if trains_encoder(conditioning):
        return RUN_PREFIX + str(Path(run).resolve())
    name = conditioning.get("encoder")
    if name is not None and str(name).startswith(RUN_PREFIX):
        return RUN_PREFIX + str(Path(str(name)[len(RUN_PREFIX):]).resolve())
    return name

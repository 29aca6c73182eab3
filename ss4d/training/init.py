"""Where a run's models start (``init`` in the config, ``--init`` on the command line):

* ``scratch`` — built from the config's ``models`` section (TRELLIS's init);
* ``trellis:<folder>`` — a TRELLIS-image-large folder, inflated to 4D (:mod:`ss4d.models.inflation`);
  the SS VAE halves are taken as they are;
* ``ss4d:<folder>`` — an SS4D pipeline folder (``pipeline.json`` ``TrellisVideoTo4DPipeline``), e.g. the
  released weights or an ``ss4d-export-pipeline`` output;
* ``run:<dir>`` — the live weights of the newest complete checkpoint of another run of the same stage;
* ``inflate:<dir>`` — the same for a 3D-pretraining run (per-frame TRELLIS classes, ``ss4d.models.per_frame``),
  inflated to 4D like TRELLIS weights (the temporal parts start as identities;
  ``configs/ss4d/inflate_from_trellis.json``).

Trainable models are always fp32 (``use_fp16=False``): mixed precision comes from Accelerate's autocast
(plain AdamW on fp16 weights diverges, TRELLIS issue #162). The EMA starts from these weights.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict

from torch import nn

import ss4d.models  # noqa: F401  (registers the 4D classes)
from trellis_ext.models.checkpoint import CheckpointError, build_model, from_pretrained

from .errors import TrainingInputError
from .stage import Stage

__all__ = ["build_models", "write_models_file", "model_config", "MODELS_FILE", "INIT_KINDS"]

MODELS_FILE = "models.json"   # RUN/models.json: the {key: {name, args}} of the run's models
INIT_KINDS = ("scratch", "trellis", "ss4d", "run", "inflate")
FP32 = {"use_fp16": False}


def _no_fp16(cfg: dict) -> dict:
    return {"name": cfg["name"], "args": {**cfg.get("args", {}), **FP32}}


def model_config(model: nn.Module) -> dict:
    """{name, args} of a built model (what save_pretrained writes)."""
    return {"name": type(model).__name__, "args": dict(getattr(model, "init_args", {}) or {})}


def build_models(stage: Stage, init: str) -> Dict[str, nn.Module]:
    """The stage's trainable models (fp32, train mode) from ``init`` (see the module docstring)."""
    kind, _, where = str(init).partition(":")
    if kind not in INIT_KINDS or (kind != "scratch" and not where):
        raise TrainingInputError(f"bad --init {init!r}",
                                 "use scratch, trellis:<folder>, ss4d:<folder>, run:<dir> or inflate:<dir>")
    if kind == "scratch":
        models = _from_configs(stage, stage.cfg.models, stage.cfg.source)
    elif kind == "run":
        models = _from_run(stage, Path(where))
    elif kind == "inflate":
        models = _inflated(stage, _from_run(stage, Path(where)), where)
    else:
        models = _from_folder(stage, Path(where), kind)
    for key, m in models.items():
        names = stage.expected_classes.get(key, ())
        if names and type(m).__name__ not in names:
            raise TrainingInputError(f"--init {init}: {key} is a {type(m).__name__}, the {stage.name} stage needs a "
                                     f"{' or '.join(names)}", "point --init at a folder of the right kind")
        m.float().train().requires_grad_(True)
    return models


def _from_configs(stage: Stage, configs: dict, source: str) -> Dict[str, nn.Module]:
    out = {}
    for key in stage.model_keys:
        if key not in configs:
            raise TrainingInputError(f"{source} has no models.{key} to build with --init scratch",
                                     f"add models.{key} = {{\"name\": ..., \"args\": ...}} (see configs/train/)")
        try:
            out[key] = build_model(_no_fp16(configs[key]), source=f"{source} models.{key}")
        except (CheckpointError, TypeError) as e:
            raise TrainingInputError(f"cannot build models.{key}: {e}", "fix its name/args") from None
    return out


def _from_folder(stage: Stage, folder: Path, kind: str) -> Dict[str, nn.Module]:
    from trellis_ext.pipelines.base import PIPELINE_JSON

    if not folder.is_dir() or not (folder / PIPELINE_JSON).is_file():
        raise TrainingInputError(f"--init {kind}:{folder}: not a model folder (no {PIPELINE_JSON})",
                                 "give a TRELLIS-image-large (trellis:) or SS4D (ss4d:) folder")
    spec = json.loads((folder / PIPELINE_JSON).read_text())
    name = spec.get("name", "")
    want = "TrellisVideoTo4DPipeline" if kind == "ss4d" else "TrellisImageTo3DPipeline"
    if name != want:
        raise TrainingInputError(f"--init {kind}:{folder} holds a {name!r} pipeline, not {want!r}",
                                 "use trellis: for TRELLIS 3D folders and ss4d: for SS4D folders")
    stems = spec.get("args", {}).get("models", {})
    out = {}
    for key in stage.model_keys:
        pipe_key, fallbacks = stage.folder_keys[key]
        candidates = ([stems[pipe_key]] if pipe_key in stems else []) + list(fallbacks)
        if kind == "ss4d":
            candidates = ([stems[pipe_key]] if pipe_key in stems else []) + [stage.export[key][1]]
        stem = next((c for c in candidates if (folder / f"{c}.json").is_file()), None)
        if stem is None:
            raise TrainingInputError(f"--init {kind}:{folder} has no {key} for the {stage.name} stage "
                                     f"(looked for {', '.join(c + '.json' for c in candidates)})",
                                     "use a complete folder or --init scratch")
        try:
            model = from_pretrained(str(folder / stem), **FP32)
        except (CheckpointError, TypeError, RuntimeError) as e:
            raise TrainingInputError(f"cannot load {folder / stem}: {e}", "check the folder") from None
        if kind == "trellis":
            from ss4d.models.inflation import INFLATORS, load_inflation_config

            inflator = INFLATORS.get(pipe_key)
            if inflator is not None:
                model = inflator(model, **load_inflation_config().get(pipe_key, {}))
        out[key] = model
    return out


def _from_run(stage: Stage, run: Path) -> Dict[str, nn.Module]:
    from safetensors.torch import load_file

    from trellis_ext.training.checkpoint import latest_complete

    cfg_file = run / MODELS_FILE
    ckpt = latest_complete(run / "checkpoints")
    if not cfg_file.is_file() or ckpt is None:
        raise TrainingInputError(f"--init run:{run}: not a training run with a complete checkpoint",
                                 "give the RUN folder of an ss4d-train run of the same stage")
    configs = json.loads(cfg_file.read_text())
    if sorted(configs) != sorted(stage.model_keys):
        raise TrainingInputError(f"--init run:{run} trained {', '.join(sorted(configs))}, the {stage.name} stage needs "
                                 f"{', '.join(stage.model_keys)}", "use a run of the same stage")
    models = _from_configs(stage, configs, str(cfg_file))
    state = load_file(str(ckpt / "model.safetensors"))
    for key, m in models.items():
        prefix = f"models.{key}."
        sd = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            m.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise TrainingInputError(f"--init run:{run}: {key} weights do not fit ({str(e).splitlines()[0]})",
                                     "use a run of the same stage and model shape") from None
    return models


def _inflated(stage: Stage, models: Dict[str, nn.Module], run: str) -> Dict[str, nn.Module]:
    """Per-frame 3D models of a 3D-pretraining run -> their 4D inflation (other models unchanged)."""
    from ss4d.models.inflation import INFLATORS, load_inflation_config
    from ss4d.models.per_frame import is_per_frame

    if not any(is_per_frame(m) for m in models.values()):
        raise TrainingInputError(f"--init inflate:{run} holds no 3D (per-frame) model to inflate",
                                 "use run:<dir> to continue a 4D run")
    args = load_inflation_config()
    out = {}
    for key, model in models.items():
        pipe_key = stage.folder_keys[key][0]
        out[key] = INFLATORS[pipe_key](model, **args.get(pipe_key, {})) if is_per_frame(model) else model
    return out


def write_models_file(run: Path, models: Dict[str, nn.Module]) -> None:
    from trellis_ext.atomic import atomic_file

    with atomic_file(os.path.join(run, MODELS_FILE), "w") as f:
        json.dump({k: model_config(m) for k, m in models.items()}, f, indent=1)

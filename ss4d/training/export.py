"""``ss4d-export-pipeline``: trained runs (their EMA weights) -> a model folder in the official SS4D layout.

    ss4d-export-pipeline --run RUN [--run RUN ...] --output DIR [--base FOLDER] [--steps 25] [--models-only]

Each ``--run`` is an ``ss4d-train`` output folder; its stage (``RUN/stage.json``) says which models it gives:

| stage | pipeline.json key | extra checkpoint (for re-encoding the dataset) |
|---|---|---|
| ``ss_flow`` | ``sparse_structure_flow_model`` -> ``ckpts/ss_flow_video_4d`` | |
| ``slat_flow`` | ``slat_flow_model`` -> ``ckpts/slat_flow_video_4d`` (+ ``slat_normalization`` from its dataset) | |
| ``slat_vae`` | ``slat_decoder_gs`` -> ``ckpts/slat_dec_gs_4d`` | ``ckpts/slat_enc_4d`` |
| ``ss_vae`` | ``sparse_structure_decoder`` -> ``ckpts/ss_dec_conv3d`` | ``ckpts/ss_enc_conv3d`` |

A 3D-pretraining run (per-frame TRELLIS classes, ``ss4d.models.per_frame``) writes ``*_3d`` instead of ``*_4d``
(``ckpts/ss_flow_video_3d``, ``ckpts/slat_enc_3d``, ...): exported as a pipeline, that is the per-frame
"no temporal layers" baseline.

Models no run gives are copied from ``--base`` (a TRELLIS-image-large or SS4D folder; e.g. the frozen SS
decoder of the paper's recipe). The weights are each run's first EMA rate at its newest complete checkpoint.
The samplers are the released settings (Euler with guidance interval [0.5, 1], ``rescale_t`` 3, CFG 7.5 for
the structure and 3 for the latents; ``--steps`` per stage, ``--ss-cfg`` / ``--slat-cfg`` to change the
strengths). The condition encoder is the runs' ``conditioning.encoder`` (one for all runs): a random stand-in or
an encoder trained by a run (``conditioning.train_encoder``, :mod:`ss4d.training.cond_encoder`) is saved into the
folder; DINOv2 weights are not copied (the folder names ``dinov2_vitl14_reg``, found as ``ss4d-generate``
documents). ``--models-only`` writes just ``ckpts/`` (e.g. the trained encoders before the SLat flow exists).
Written atomically; exit 2 on bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

from torch import nn

import ss4d.models  # noqa: F401  (registers the 4D classes)
from ss4d.models.per_frame import is_per_frame
from trellis_ext.atomic import atomic_directory
from trellis_ext.models.checkpoint import build_model, from_pretrained, save_pretrained
from trellis_ext.training.checkpoint import latest_complete

from ..exit_codes import EXIT_BAD_INPUT, EXIT_OK
from .cond_encoder import RUN_PREFIX, encoder_source, load_encoder
from .errors import TrainingInputError
from .init import MODELS_FILE
from .loop import CHECKPOINT_DIR, CONFIG_FILE, EMA_FILE, STAGE_FILE
from .stages import STAGES

__all__ = ["export_pipeline", "load_run_models", "main", "SAMPLER_DEFAULTS"]

SAMPLER_NAME = "FlowEulerGuidanceIntervalSampler"
RELEASED_STEPS = 25
#: stem suffixes: the 4D stages' checkpoints, and where a 3D-pretraining (per-frame) run's model goes instead
FOUR_D_SUFFIX, PER_FRAME_SUFFIX = "_4d", "_3d"
SS_CFG, SLAT_CFG = 7.5, 3.0
CFG_INTERVAL = [0.5, 1.0]
RESCALE_T = 3.0
SAMPLER_DEFAULTS = {"steps": RELEASED_STEPS, "cfg_interval": CFG_INTERVAL, "rescale_t": RESCALE_T}


def load_run_models(run: Path) -> tuple[str, Dict[str, nn.Module], dict]:
    """(stage, {model key: model with the EMA weights}, stage info) of a training run."""
    run = Path(run)
    info_file, models_file = run / STAGE_FILE, run / MODELS_FILE
    if not info_file.is_file() or not models_file.is_file():
        raise TrainingInputError(f"{run} is not an ss4d-train run (no {STAGE_FILE} / {MODELS_FILE})",
                                 "pass the --output folder of ss4d-train")
    ckpt = latest_complete(run / CHECKPOINT_DIR)
    if ckpt is None:
        raise TrainingInputError(f"{run} has no complete checkpoint yet", "train it for at least checkpoint_every steps")
    from safetensors.torch import load_file

    info = json.loads(info_file.read_text())
    state = load_file(str(ckpt / EMA_FILE))
    models = {}
    for key, spec in json.loads(models_file.read_text()).items():
        model = build_model(spec, source=str(models_file))
        prefix = f"models.{key}."
        model.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
        models[key] = model.eval()
    return info["stage"], models, info


def _sampler(cfg: float, steps: int) -> dict:
    return {"name": SAMPLER_NAME, "args": {"sigma_min": 1e-5},
            "params": {**SAMPLER_DEFAULTS, "steps": steps, "cfg_strength": cfg}}


def _cond_encoder(runs: List[Path]) -> Optional[str]:
    """The one encoder that conditioned the runs (:func:`~ss4d.training.cond_encoder.encoder_source`), or None."""
    encoders = set()
    for run in runs:
        cfg = json.loads((run / CONFIG_FILE).read_text())
        if STAGES[cfg["stage"]].needs_cond:
            encoders.add(encoder_source(run, cfg["conditioning"]))
    if len(encoders) > 1:
        raise TrainingInputError(f"the runs were conditioned by different encoders ({', '.join(sorted(encoders))})",
                                 "export runs trained with the same conditioning.encoder")
    return next(iter(encoders), None)


def export_pipeline(runs: List[Path], output: Path, base: Optional[Path] = None, steps: int = RELEASED_STEPS,
                    models_only: bool = False, ss_cfg: float = SS_CFG, slat_cfg: float = SLAT_CFG) -> Path:
    from ..pipeline import PIPELINE_NAME, REQUIRED_MODELS, Pipeline

    models: Dict[str, nn.Module] = {}
    extras: Dict[str, nn.Module] = {}
    stems: Dict[str, str] = {}
    normalization = None
    for run in runs:
        stage, trained, info = load_run_models(run)
        for key, model in trained.items():
            pipe_key, stem = STAGES[stage].export[key]
            if is_per_frame(model):  # a 3D-pretraining run: ckpts/*_4d -> ckpts/*_3d
                stem = stem.replace(FOUR_D_SUFFIX, PER_FRAME_SUFFIX)
            if pipe_key is None:
                extras[stem] = model
            else:
                models[pipe_key], stems[pipe_key] = model, stem
        normalization = info.get("slat_normalization", normalization)
    if base is not None:
        spec = json.loads((Path(base) / "pipeline.json").read_text()) if (Path(base) / "pipeline.json").is_file() else None
        if spec is None:
            raise TrainingInputError(f"--base {base} is not a pipeline folder", "give a TRELLIS or SS4D folder")
        for key in REQUIRED_MODELS:
            if key not in models and key in spec["args"]["models"]:
                stems[key] = spec["args"]["models"][key]
                models[key] = from_pretrained(str(Path(base) / stems[key]), use_fp16=False)
    missing = [k for k in REQUIRED_MODELS if k not in models]
    output = Path(output)
    if output.exists() and (not output.is_dir() or (any(output.iterdir()) and not (
            (output / "pipeline.json").is_file() or (output / "ckpts").is_dir()))):
        raise TrainingInputError(f"{output} exists and is not a model folder; refusing to replace it",
                                 "choose a new --output (an earlier export there is replaced as a whole)")
    with atomic_directory(output, prefix=f".{output.name}.tmp-") as tmp:
        tmp = Path(tmp)
        if models_only:
            for stem, model in {**{stems[k]: m for k, m in models.items()}, **extras}.items():
                save_pretrained(model, str(tmp / stem))
            return output
        if missing:
            raise TrainingInputError(f"no run or --base gives {', '.join(missing)}",
                                     "add the missing stage's --run, a --base folder, or use --models-only")
        if normalization is None:
            raise TrainingInputError("no slat_normalization: export needs the slat_flow run",
                                     "add --run of the slat_flow stage")
        from ..conditioning.resolve import RANDOM_NAMES

        enc_name = _cond_encoder(runs)
        encoder = load_encoder(enc_name) if enc_name is not None else None
        trained = enc_name is not None and enc_name.startswith(RUN_PREFIX)
        config = {"name": PIPELINE_NAME, "args": {
            "models": {k: stems[k] for k in REQUIRED_MODELS},
            "sparse_structure_sampler": _sampler(ss_cfg, steps), "slat_sampler": _sampler(slat_cfg, steps),
            "slat_normalization": normalization},
            "ss4d": {"exported_from": [str(r) for r in runs]}}
        from trellis_ext.pipelines.base import build_sampler

        ss_sampler, ss_params = build_sampler(config["args"]["sparse_structure_sampler"], "export")
        slat_sampler, slat_params = build_sampler(config["args"]["slat_sampler"], "export")
        pipe = Pipeline({k: models[k] for k in REQUIRED_MODELS}, ss_sampler, ss_params, slat_sampler, slat_params,
                        normalization, encoder if encoder is not None else nn.Identity(), config=config)
        made_here = trained or enc_name in RANDOM_NAMES   # trained or seeded here: the folder must carry it
                                                          # (DINOv2 is not copied)
        pipe.save_pretrained(tmp, include_image_cond_model=made_here)
        for stem, model in extras.items():
            save_pretrained(model, str(tmp / stem))
    return output


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="ss4d-export-pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", required=True, help="an ss4d-train run folder (repeat per stage)")
    p.add_argument("--output", required=True, help="the model folder to write")
    p.add_argument("--base", default=None, help="folder to take the models no run gives from (TRELLIS/SS4D)")
    p.add_argument("--steps", type=int, default=RELEASED_STEPS, help="Euler steps per stage in pipeline.json")
    p.add_argument("--models-only", action="store_true", help="write only ckpts/ (no pipeline.json)")
    p.add_argument("--ss-cfg", type=float, default=SS_CFG, help=f"CFG of the structure stage (released {SS_CFG})")
    p.add_argument("--slat-cfg", type=float, default=SLAT_CFG, help=f"CFG of the SLat stage (released {SLAT_CFG})")
    a = p.parse_args(argv)
    try:
        if a.steps < 1:
            raise TrainingInputError(f"--steps must be >= 1, got {a.steps}", "e.g. 25")
        if not (a.ss_cfg >= 0 and a.slat_cfg >= 0):
            raise TrainingInputError(f"CFG strengths must be >= 0, got {a.ss_cfg} / {a.slat_cfg}", "e.g. 7.5 / 3")
        out = export_pipeline([Path(r) for r in a.run], Path(a.output), Path(a.base) if a.base else None, a.steps,
                              a.models_only, a.ss_cfg, a.slat_cfg)
    except TrainingInputError as e:
        print(f"ss4d-export-pipeline: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"ss4d-export-pipeline: wrote {out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

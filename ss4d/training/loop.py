"""The Accelerate training loop shared by every stage (``ss4d-train``).

One optimizer step at step s (0-based) of phase ``cfg.phase_at(s)``:

1. the rank's batch is read by keys (s, slot, item) (:class:`~trellis_ext.training.sampler.StepBatchSampler`)
   and split into ``micro_batches``;
2. per micro-batch m: the global torch RNG is seeded from (seed, s, rank, m) (model-internal draws such as
   a VAE's posterior sample) and the objective draws t / noise / CFG drops from a generator keyed the same
   way; ``backward(loss / n)``, gradients synchronised on the last micro-batch only (``no_sync``);
3. the mean loss over ranks is checked (non-finite -> stop, naming the step and the last good checkpoint);
4. the gradient is clipped at the adaptive threshold (``accelerator.clip_grad_norm_``), AdamW steps at the
   schedule's rate for step s (``cfg.lr_at``, :mod:`ss4d.training.lr_schedule`), the EMA updates (not when the
   fp16 scaler skipped the step);
5. one JSON line goes to ``RUN/log.jsonl``; every ``checkpoint_every`` steps and at the end a checkpoint; every
   ``eval_every`` steps the fixed evaluation batch (``eval_*`` in the log) and a snapshot
   ``RUN/snapshots/step_N.png`` (the conditioning frames with their masks; for the VAE the renders over the
   ground truth).

Nothing depends on RNG streams carried between steps, so resuming from a checkpoint (models, optimizer,
scaler, EMA, clipper, step) continues bit for bit (CPU, fp32).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from trellis_ext.atomic import atomic_file
from trellis_ext.training.checkpoint import CheckpointFolders, latest_complete
from trellis_ext.training.ema import EMA
from trellis_ext.training.flow import keyed_seed
from trellis_ext.training.grad_clip import AdaptiveGradClipper
from trellis_ext.training.sampler import ResumableSampler, StepBatchSampler

from ..data.layout import FolderDataset
from .config import TrainConfig
from .errors import TrainingInputError, TrainingStopped
from .init import build_models, write_models_file
from .stage import StageDataset, TrainModule, set_gradient_checkpointing
from .stages import STAGES

__all__ = ["train", "RunState", "CONFIG_FILE", "LOG_FILE", "STAGE_FILE", "CHECKPOINT_DIR", "EMA_FILE",
           "KILL_ENV", "open_dataset"]

CONFIG_FILE = "config.json"
LOG_FILE = "log.jsonl"
STAGE_FILE = "stage.json"
CHECKPOINT_DIR = "checkpoints"
SNAPSHOT_DIR = "snapshots"       # RUN/snapshots/step_N.png at every evaluation
EMA_FILE = "ema.safetensors"      # the first EMA rate's full state dict, keys "models.<key>.<param>"
#: Fault injection for the resume tests: "step:N" SIGKILLs the process after optimizer step N, "save:N" in
#: the middle of the checkpoint of step N (after every file, before the complete marker).
KILL_ENV = "SS4D_TRAIN_KILL_AT"
MODEL_SALT = 0x30D3
INIT_SALT = 0x1417
EVAL_SALT = 0xE7A1
EVAL_STEP = -1
EVAL_CLIPS = 2


class RunState:
    """The loop's own checkpointed state: optimizer steps done and the config's hash."""

    def __init__(self, config_hash: str):
        self.step, self.config_hash = 0, config_hash

    def state_dict(self) -> dict:
        return {"step": self.step, "config_hash": self.config_hash}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.config_hash = int(state["step"]), str(state["config_hash"])


class MicroCollate:
    """samples -> list of ``n`` collated micro-batches (picklable for DataLoader workers)."""

    def __init__(self, stage, n: int):
        self.stage, self.n = stage, n

    def __call__(self, samples):
        k = len(samples) // self.n
        return [self.stage.collate(samples[i * k:(i + 1) * k]) for i in range(self.n)]


def open_dataset(data: str | Path) -> FolderDataset:
    data = Path(data)
    if not data.is_dir():
        raise TrainingInputError(f"dataset not found: {data}", "pass the OUT folder of ss4d-build-dataset with --data")
    return FolderDataset(data)


def _kill_point(kind: str, step: int) -> None:
    if os.environ.get(KILL_ENV) == f"{kind}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def _accelerator(cfg: TrainConfig, output: Path):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    mp = cfg.trainer["mixed_precision"]
    log_with = "tensorboard" if importlib.util.find_spec("tensorboard") else None
    return Accelerator(mixed_precision=mp, log_with=log_with, project_dir=str(output),
                       kwargs_handlers=[DistributedDataParallelKwargs(
                           find_unused_parameters=bool(cfg.trainer["find_unused_parameters"]))])


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log lines of steps <= ``step`` (a killed run may have logged past its last checkpoint)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(rec.get("step", 0)) <= step:
            keep.append(line)
    with atomic_file(path, "w") as f:
        f.write("".join(x + "\n" for x in keep))


def _eval_batches(stage, cfg: TrainConfig, frames: int):
    """(fixed evaluation batch without augmentation, the same samples' conditioning frames with the masking
    augmentation for the snapshots or None) from held-out clips, else the first training clips."""
    clips = stage.index.held_out or stage.index.fitting(frames)
    clips = [c for c in clips if c.usable_frames >= stage.index.span(frames, stage.index.strides[0])][:EVAL_CLIPS]
    if not clips:
        return None, None
    keys = [(EVAL_STEP, i, i) for i in range(len(clips))]
    ds = StageDataset(stage, clips, frames, cfg.trainer["seed"], rank=0, augment=False)
    masked = None
    if stage.needs_cond:
        aug = StageDataset(stage, clips, frames, cfg.trainer["seed"], rank=0, augment=True)
        masked = torch.cat([aug[k]["cond_images"] for k in keys])
    return stage.collate([ds[k] for k in keys]), masked


def write_snapshot(path: Path, rows: List[torch.Tensor]) -> None:
    """One PNG: each row a strip of images [N, 3, H, W] in [0, 1] (resized to the first row's height)."""
    import numpy as np
    from PIL import Image

    strips = []
    for row in rows:
        imgs = (row.detach().float().clamp(0, 1).cpu().permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
        strips.append(Image.fromarray(np.concatenate(list(imgs), axis=1)))
    h = strips[0].height
    strips = [s if s.height == h else s.resize((round(s.width * h / s.height), h)) for s in strips]
    canvas = Image.new("RGB", (max(s.width for s in strips), h * len(strips)))
    for i, s in enumerate(strips):
        canvas.paste(s, (0, i * h))
    with atomic_file(path, "wb") as f:
        canvas.save(f, format="PNG")


def _snapshot(output: Path, step: int, stage, masked) -> None:
    rows = ([masked] if masked is not None else []) + list(getattr(stage, "last_renders", None) or [])
    if rows:
        write_snapshot(output / SNAPSHOT_DIR / f"step_{step:07d}.png", rows)


@torch.no_grad()
def evaluate(module: TrainModule, batch, seed: int) -> Dict[str, float]:
    """The objective on a fixed batch with fixed t / noise (no CFG drop, no masks): ``eval_loss`` + logs."""
    was = module.training
    module.eval()
    torch.manual_seed(keyed_seed(EVAL_SALT, seed))
    loss, logs = module(batch, (EVAL_SALT, seed), train=False)
    module.train(was)
    return {"eval_loss": float(loss), **{f"eval_{k}": v for k, v in logs.items()}}


def train(cfg: TrainConfig, data: str | Path, output: str | Path, max_steps: Optional[int] = None,
          resume: str = "auto", allow_config_change: bool = False, progress: bool = True,
          init: Optional[str] = None) -> Dict[str, Any]:
    """Run (or resume) a training run; returns a summary. See the module docstring."""
    output = Path(output)
    reader = open_dataset(data)
    acc = _accelerator(cfg, output)
    device, rank, world = acc.device, acc.process_index, acc.num_processes
    seed = int(cfg.trainer["seed"])
    ckpts = CheckpointFolders(output / CHECKPOINT_DIR, cfg.trainer["keep_last"])
    resume_from = _resume_target(resume, ckpts, output)

    stage = STAGES[cfg.stage](cfg, reader, source=str(data))
    stage.setup(device)
    if not stage.index.fitting(cfg.phases[0].frames):
        longest = max(c.usable_frames for c in stage.index.clips)
        raise TrainingInputError(f"every clip is shorter than phase 0's {cfg.phases[0].frames} frames (longest usable: "
                                 f"{longest}, max_frame {cfg.dataset['max_frame']})",
                                 "use fewer frames in progressive[0] or a dataset with longer clips")
    eval_batch, masked_cond = _eval_batches(stage, cfg, cfg.phases[0].frames)
    torch.manual_seed(keyed_seed(INIT_SALT, seed))   # scratch init: the same weights on every rank and rerun
    models = build_models(stage, init or cfg.raw["init"])
    stage.check_models(models, StageDataset(stage, stage.index.fitting(cfg.phases[0].frames)[:1],
                                            cfg.phases[0].frames, seed, 0, augment=False)[(EVAL_STEP, 0, 0)])
    for m in models.values():
        set_gradient_checkpointing(m, cfg.trainer["gradient_checkpointing"])
    module = TrainModule(stage, models).to(device)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.trainer["lr"], betas=tuple(cfg.trainer["betas"]),
                                  weight_decay=cfg.trainer["weight_decay"])
    ema = EMA(module, cfg.trainer["ema_rates"])
    gc = cfg.trainer["grad_clip"]
    clipper = AdaptiveGradClipper(gc["max_norm"], gc["percentile"], gc["buffer"])
    state = RunState(cfg.hash())
    module, optimizer = acc.prepare(module, optimizer)
    for obj in (state, ema, clipper):
        acc.register_for_checkpointing(obj)
    unwrapped = acc.unwrap_model(module)

    if acc.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        ckpts.clean_stale()
    acc.wait_for_everyone()
    if resume_from is not None:
        acc.load_state(str(resume_from))
        if state.config_hash != cfg.hash() and not allow_config_change:
            raise TrainingInputError(f"the config differs from the one {output} was trained with",
                                     "use the run's own config.json, a new --output, or --allow-config-change")
        state.config_hash = cfg.hash()
    if acc.is_main_process:
        with atomic_file(output / CONFIG_FILE, "w") as f:
            f.write(cfg.to_json())
        with atomic_file(output / STAGE_FILE, "w") as f:
            json.dump({"stage": cfg.stage, **stage.run_info()}, f, indent=1)
        write_models_file(output, {k: m for k, m in unwrapped.models.items()})
        _truncate_log(output / LOG_FILE, state.step)
    acc.wait_for_everyone()
    if acc.log_with:
        acc.init_trackers("ss4d")

    end = cfg.total_steps if max_steps is None else min(cfg.total_steps, int(max_steps))
    log = open(output / LOG_FILE, "a") if acc.is_main_process else None
    bar = _progress(acc.is_main_process and progress, state.step, end, cfg.stage)
    if state.step == 0 and eval_batch is not None and acc.is_main_process and cfg.trainer["eval_every"]:
        _write(log, {"step": 0, **evaluate(unwrapped, eval_batch, seed)})
        _snapshot(output, 0, stage, masked_cond)
    last_saved = resume_from
    try:
        while state.step < end:
            index, phase, start = cfg.phase_at(state.step)
            stop = end if index == len(cfg.phases) - 1 else min(end, start + phase.steps)
            fitting = stage.index.fitting(phase.frames)
            if not fitting:
                raise TrainingInputError(f"every clip is shorter than phase {index}'s {phase.frames} frames",
                                         "use fewer frames or a dataset with longer clips")
            skipped = len(stage.index.clips) - len(fitting)
            if acc.is_main_process:
                _write(log, {"step": state.step, "phase": index, "frames": phase.frames, "clips": len(fitting),
                             "skipped_short_clips": skipped})
            loader = torch.utils.data.DataLoader(
                StageDataset(stage, fitting, phase.frames, seed, rank),
                batch_sampler=StepBatchSampler(ResumableSampler(len(fitting), seed), state.step, stop,
                                               phase.batch_size, lambda s: cfg.base_position(s, world), rank, world),
                collate_fn=MicroCollate(stage, phase.micro_batches), num_workers=int(cfg.trainer["num_workers"]))
            for micro in loader:
                for group in optimizer.param_groups:   # a function of the step alone (exact resume)
                    group["lr"] = cfg.lr_at(state.step)
                record = _train_step(acc, module, optimizer, ema, clipper, unwrapped, micro, state.step, seed, rank,
                                     last_saved)
                state.step += 1
                record.update({"step": state.step, "frames": phase.frames, "phase": index,
                               "lr": optimizer.param_groups[0]["lr"],
                               "samples_per_s": phase.batch_size * world / max(record.pop("seconds"), 1e-9)})
                every = cfg.trainer["eval_every"]
                if eval_batch is not None and acc.is_main_process and every and \
                        (state.step % every == 0 or state.step == end):
                    record.update(evaluate(unwrapped, eval_batch, seed))
                    _snapshot(output, state.step, stage, masked_cond)
                if acc.is_main_process:
                    _write(log, record)
                    acc.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=state.step)
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4g}", T=phase.frames)
                _kill_point("step", state.step)
                if state.step % cfg.trainer["checkpoint_every"] == 0 or state.step == end:
                    last_saved = _save(acc, ckpts, state, ema, unwrapped, cfg)
    finally:
        bar.close()
        if log is not None:
            log.close()
    acc.wait_for_everyone()
    acc.end_training()
    return {"step": state.step, "checkpoint": str(last_saved) if last_saved else None, "output": str(output),
            "rank": rank, "weights_sha256": weights_digest(unwrapped)}


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over every parameter's bytes (in name order): equal digests = bit-identical weights."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _resume_target(resume: str, ckpts: CheckpointFolders, output: Path) -> Optional[Path]:
    if resume == "none":
        if latest_complete(ckpts.root) is not None:
            raise TrainingInputError(f"{output} already has checkpoints and --resume none would overwrite them",
                                     "use --resume auto to continue, or a new --output")
        return None
    if resume == "auto":
        return latest_complete(ckpts.root)
    path = Path(resume)
    from trellis_ext.training.checkpoint import COMPLETE_MARKER

    if not (path / COMPLETE_MARKER).is_file():
        raise TrainingInputError(f"--resume {path} is not a complete checkpoint folder (no {COMPLETE_MARKER})",
                                 f"use --resume auto or a folder under {ckpts.root}")
    return path


def _train_step(acc, module, optimizer, ema, clipper, unwrapped, micro: List, step: int, seed: int, rank: int,
                last_saved) -> Dict[str, Any]:
    t0 = time.perf_counter()
    n = len(micro)
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=acc.device)
    logs: Dict[str, float] = {}
    for m, batch in enumerate(micro):
        torch.manual_seed(keyed_seed(MODEL_SALT, seed, step, rank, m))
        sync = m == n - 1 or acc.num_processes == 1
        with (contextlib.nullcontext() if sync else acc.no_sync(module)):
            with acc.autocast():
                loss, extra = module(batch, (seed, step, rank, m))
            acc.backward(loss / n)
        total += loss.detach().float() / n
        for k, v in extra.items():
            logs[k] = logs.get(k, 0.0) + float(v) / n
    mean_loss = float(acc.reduce(total, reduction="mean"))
    if not math.isfinite(mean_loss):
        raise TrainingStopped(f"non-finite loss ({mean_loss}) at step {step + 1}; last good checkpoint: "
                              f"{last_saved or 'none'} (resume from it with a lower lr or fp32)")
    threshold = clipper.threshold()
    norm = float(acc.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], threshold))
    clipper.record(norm)
    skipped = not math.isfinite(norm)
    if not skipped:
        optimizer.step()
        skipped = bool(acc.optimizer_step_was_skipped)
    if not skipped:
        ema.update(unwrapped)
    optimizer.zero_grad(set_to_none=True)
    return {"loss": mean_loss, "grad_norm": norm, "grad_clip": threshold, "skipped": skipped,
            "seconds": time.perf_counter() - t0, **logs}


def _save(acc, ckpts: CheckpointFolders, state: RunState, ema: EMA, unwrapped, cfg: TrainConfig) -> Path:
    from safetensors.torch import save_file

    step = state.step
    if acc.is_main_process:
        ckpts.begin(step)
    acc.wait_for_everyone()
    tmp = ckpts.tmp_path(step)
    acc.save_state(str(tmp))
    if acc.is_main_process:
        sd = ema.state_dict_for(unwrapped, ema.rates[0])
        save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()}, str(tmp / EMA_FILE))
    acc.wait_for_everyone()
    _kill_point("save", step)
    final = ckpts.final_path(step)
    if acc.is_main_process:
        final = ckpts.commit(step, {"stage": cfg.stage, "config_hash": state.config_hash, "ema_rate": ema.rates[0]})
    acc.wait_for_everyone()
    return final


def _write(log, record: dict) -> None:
    log.write(json.dumps(record) + "\n")
    log.flush()


def _progress(enabled: bool, start: int, end: int, stage: str):
    from tqdm.auto import tqdm

    return tqdm(total=end, initial=start, desc=f"train {stage}", disable=not enabled, dynamic_ncols=True)

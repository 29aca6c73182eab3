"""``ss4d-build-dataset --executor ray``: the builder's per-asset work on a Ray cluster.

Each asset goes through two stages, scheduled by Ray with their own resource requests:

* **CPU stage** (``mesh``, ``voxelize``): one Ray task per asset, ``num_cpus=--ray-cpus-per-task``,
  retried ``--ray-retries`` times when its worker dies (node lost, out of memory);
* **GPU stage** (``render``, ``cond``, ``features``, ``ss_latent``, ``latent``), for the clips that
  finished the CPU stage: a pool of long-lived Ray actors, each holding ``--ray-gpus-per-task`` GPUs
  and keeping DINOv2 and the encoders loaded across assets (restarted and the call retried when one
  dies).

Both stages run :meth:`ss4d.data.build.DatasetBuilder.process_asset` with the step subset of their
stage, so the outputs are those of the single-process build, byte for byte; per-clip locks, resume
and failure records work as there. Progress is a tqdm bar over finished assets. ``--rank`` /
``--world-size`` still select the share of the assets (several Ray clusters, or none: SLURM arrays).
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, replace
from pathlib import Path

from .build import CPU_STEPS, BuildConfig, DatasetBuilder, RunSummary, _progress, params_hash

log = logging.getLogger("ss4d.data.ray")

POLL_S = 0.2  # how long one ray.wait / ActorPool poll blocks

_WORKER_BUILDERS: dict[str, DatasetBuilder] = {}


def stage_configs(cfg: BuildConfig, gpus_per_task: float) -> tuple[BuildConfig | None, BuildConfig | None]:
    """(CPU-stage config, GPU-stage config) for ``cfg.steps``; None where a stage has no step."""
    cpu = tuple(s for s in cfg.steps if s in CPU_STEPS)
    gpu = tuple(s for s in cfg.steps if s not in CPU_STEPS)
    gpu_device = cfg.device if cfg.device != "auto" else ("cuda" if gpus_per_task > 0 else "cpu")
    return (replace(cfg, steps=cpu, device="cpu", progress=False, executor="local") if cpu else None,
            replace(cfg, steps=gpu, device=gpu_device, progress=False, executor="local") if gpu else None)


def _builder(cfg: BuildConfig) -> DatasetBuilder:
    """This worker's builder for ``cfg`` (kept, with its loaded models, for the worker's next tasks)."""
    key = params_hash(asdict(cfg))
    if key not in _WORKER_BUILDERS:
        if cfg.threads > 0:
            import torch

            torch.set_num_threads(cfg.threads)
        _WORKER_BUILDERS[key] = DatasetBuilder(cfg)
    b = _WORKER_BUILDERS[key]
    b.summary = RunSummary(rank=cfg.rank, world_size=cfg.world_size)
    return b


def run_stage(cfg: BuildConfig, path: str, rel: str, collision: str | None,
              only_clips: list[str] | None) -> tuple[RunSummary, list[str]]:
    """One stage of one asset in this process: (its summary, ids of the clips that finished ok)."""
    b = _builder(cfg)
    done = b.process_asset(Path(path), rel, collision, None if only_clips is None else set(only_clips))
    return b.summary, done


class StageWorker:
    """A Ray actor running the GPU stage; its builder (and models) live as long as the actor."""

    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg

    def run(self, path: str, rel: str, collision: str | None, only_clips: list[str] | None):
        return run_stage(self.cfg, path, rel, collision, only_clips)


def merge(total: RunSummary, part: RunSummary, clips: bool, results: bool) -> None:
    """Add a stage's summary: step counts and failures always; ``clips``: the number of clips seen;
    ``results``: the finished-clip counts (from the last stage a clip went through)."""
    for name in ("steps_run", "steps_skipped", "step_seconds"):
        acc = getattr(total, name)
        for k, v in getattr(part, name).items():
            acc[k] = round(acc.get(k, 0) + v, 3)
    total.failures += part.failures
    total.clips_busy += part.clips_busy
    if clips:
        total.clips_total += part.clips_total
    if results:
        total.clips_ok += part.clips_ok
        total.clips_flagged += part.clips_flagged
        total.frames += part.frames
        total.voxels_per_frame += part.voxels_per_frame
        total.tokens_per_frame += part.tokens_per_frame


def connect(cfg: BuildConfig):
    """``ray`` after joining ``--ray-address`` / ``$RAY_ADDRESS`` (or starting a local cluster);
    a session the caller already started (``ray.init``) is used as it is."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("--executor ray needs Ray: pip install -e '.[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=cfg.ray_address or os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                 logging_level=logging.WARNING)
    return ray


def run_on_ray(cfg: BuildConfig, assets: list[tuple[Path, str, str | None]], summary: RunSummary) -> RunSummary:
    """Process ``assets`` ((path, relative name, collision error)) on Ray; returns ``summary`` with
    every stage's results added."""
    ray = connect(cfg)
    from ray.util import ActorPool

    resources = ray.cluster_resources()
    gpus = cfg.ray_gpus_per_task if cfg.ray_gpus_per_task is not None else (1.0 if resources.get("GPU", 0) else 0.0)
    cpu_cfg, gpu_cfg = stage_configs(cfg, gpus)
    opts = dict(num_cpus=cfg.ray_cpus_per_task)
    cpu_task = ray.remote(run_stage).options(max_retries=cfg.ray_retries, **opts)
    pool = None
    if gpu_cfg is not None:
        # GPU clusters: one actor per GPU share; CPU-only ones: half the CPUs (the rest run CPU tasks)
        n = int(resources.get("GPU", 0) // gpus) if gpus > 0 else int(resources.get("CPU", 1) // (2 * opts["num_cpus"]))
        actor = ray.remote(StageWorker).options(num_gpus=gpus, max_restarts=cfg.ray_retries,
                                                max_task_retries=cfg.ray_retries, **opts)
        pool = ActorPool([actor.remote(gpu_cfg) for _ in range(max(1, n))])
        log.info("Ray: %d GPU-stage workers (%g GPU, %g CPU each)", max(1, n), gpus, opts["num_cpus"])

    def submit_gpu(path: str, rel: str, collision: str | None, only: list[str] | None) -> None:
        pool.submit(lambda a, v: a.run.remote(*v), (path, rel, collision, only))

    bar = _progress(range(len(assets)), cfg.progress, desc="ray")
    finished = 0

    def tick() -> None:
        nonlocal finished
        finished += 1
        if hasattr(bar, "update"):
            bar.update(1)

    pending = {}
    for path, rel, collision in assets:
        if cpu_cfg is not None:
            pending[cpu_task.remote(cpu_cfg, str(path), rel, collision, None)] = (path, rel)
        else:
            submit_gpu(str(path), rel, collision, None)
    while pending or (pool is not None and pool.has_next()):
        if pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            for ref in ready:
                path, rel = pending.pop(ref)
                part, done = ray.get(ref)
                merge(summary, part, clips=True, results=gpu_cfg is None or not done)
                if gpu_cfg is not None and done:
                    submit_gpu(str(path), rel, None, done)
                else:
                    tick()
        while pool is not None and pool.has_next():
            try:
                part, _ = pool.get_next_unordered(timeout=POLL_S)
            except TimeoutError:
                break
            merge(summary, part, clips=cpu_cfg is None, results=True)
            tick()
    if hasattr(bar, "close"):
        bar.close()
    return summary

"""``ss4d-build-dataset``: animated 3D assets -> 4D training samples (see docs/data.md).

Steps per clip, in order (each writes one folder atomically: ``<name>.tmp-<host>-<pid>-*`` then rename, with
a ``step.json`` holding the step's parameters and their hash; a folder whose hash matches the
current parameters is a finished item and is skipped, anything else is redone):

    mesh       clips/<id>/mesh/                 normalised per-frame meshes (+ textures)
    voxelize   clips/<id>/voxels/<t>.npz        surface voxels per frame, motion / budget flags
    render     clips/<id>/renders/<t>/          V views per frame: RGBA, depth, transforms.json
    cond       clips/<id>/cond/                 conditioning video (one fixed camera)
    features   clips/<id>/features/<name>/<t>.npz   DINOv2 features of the kept voxels
    ss_latent  clips/<id>/ss_latents/<enc>/<t>.npz  SS encoder latents (needs --ss-encoder; with --ss-mirror
                                                    also those of the mirrored voxels, <enc>__mirror_x)
    latent     clips/<id>/latents/<name>/<t>.npz    SLat latents (needs --slat-encoder)

Sharding: asset ``i`` (sorted by path) belongs to rank ``i % world_size``. Every rank rewrites
``metadata.csv`` / ``frames.csv`` from all ``clip.json`` files when it finishes; ``--merge-only``
does just that (and the latent statistics) after a multi-machine run.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ss4d.errors import InputError
from trellis_ext.atomic import atomic_directory, atomic_file

from .features import AGGREGATIONS, DEFAULT_BATCH_SIZE, DEFAULT_VISIBILITY_TOLERANCE
from .gltf_animation import TIME_MODES
from .layout import (CLIPS_DIR, FAILED_ASSETS_DIR, FORMAT_VERSION, FRAMES_COLUMNS, FRAMES_FILE,
                     METADATA_COLUMNS, METADATA_FILE, STATS_DIR, STATUS_OK, STEP_RECORD, TMP_MARK, ClipPaths,
                     asset_key, current_record, failed_asset_record, frame_file, iter_clip_records, latent_set_name,
                     load_feature_frame, load_slat_latent_frame, load_ss_latent_frame, make_clip_id,
                     mirror_voxels, mirrored_ss_set, num_real_frames_of, sanitize, ss_stats_name)
from .render import RenderSettings
from .voxelize import DEFAULT_RESOLUTION

log = logging.getLogger("ss4d.data.build")

NATIVE_EXTENSIONS = (".glb", ".gltf")
BLENDER_EXTENSIONS = (".fbx", ".blend", ".abc", ".usd", ".usda", ".usdc", ".usdz")
DEFAULT_EXTENSIONS = NATIVE_EXTENSIONS + (".fbx", ".blend")
STEPS = ("mesh", "voxelize", "render", "cond", "features", "ss_latent", "latent")
CPU_STEPS = ("mesh", "voxelize")  # the rest use the GPU when there is one (rendering, DINOv2, encoders)
LOOP_IF_CYCLIC = "loop-if-cyclic"  # --time-mode: loop cyclic clips, clamp the others
BUILD_TIME_MODES = TIME_MODES + (LOOP_IF_CYCLIC,)
EXECUTORS = ("local", "ray")
FEATURE_DTYPES = ("auto", "float32", "bfloat16", "float16")
STATUS_FAILED = "failed"
SHORT_CLIP = "short_clip"  # informational flag: fewer real frames than --frames (does not set `flagged`)
DEFAULT_FRAMES = 36  # frames per clip (SS4D trains on the first 36 frames)
DEFAULT_FPS = 24.0
DEFAULT_STATIC_IOU = 0.95  # clip flagged low-motion if every frame's voxel IoU with frame 0 >= this
DEFAULT_MAX_VOXELS = 32768  # clip flagged over budget if any frame has more voxels (SLat training filter)
HASH_CHARS = 12


# ------------------------------------------------------------------------------------ helpers
def tmp_suffix() -> str:
    """``.tmp-<host>-<pid>``: unique per process even with many machines on one shared file system."""
    return f"{TMP_MARK}{sanitize(socket.gethostname())}-{os.getpid()}"


def params_hash(params: dict) -> str:
    """Hash of a step's parameters and the format/code version (:data:`~ss4d.data.layout.FORMAT_VERSION`)."""
    data = json.dumps({"format": FORMAT_VERSION, "params": params}, sort_keys=True, default=str)
    return hashlib.sha1(data.encode()).hexdigest()[:HASH_CHARS]


def file_sha256(path: Path, h=None) -> str:
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_digest(source: str) -> str:
    """Content hash of model weights (so a step hash changes with the weights, not with their path):
    every file of a folder (sorted, names included), a single file, or a checkpoint stem's
    ``<stem>.json`` + ``<stem>.safetensors``. A source that is no file (``tiny-random``) is its name."""
    p = Path(source)
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else \
        [p] if p.is_file() else [q for q in (Path(f"{source}.json"), Path(f"{source}.safetensors")) if q.is_file()]
    if not files:
        return str(source)
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        file_sha256(f, h)
    return h.hexdigest()[:2 * HASH_CHARS]


@contextlib.contextmanager
def clip_lock(path: Path) -> Iterator[bool]:
    """Try to take the clip's lock file (POSIX record lock: works across machines on NFS). Yields
    False at once when another process holds it (an overlapping run working on the same clip)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.lockf(f, fcntl.LOCK_UN)


def write_json_atomic(path: Path, data) -> None:
    with atomic_file(path, "w") as f:
        f.write(json.dumps(data, indent=1, default=_json_default))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def step_done(folder: Path, expected_hash: str) -> bool:
    rec = folder / STEP_RECORD
    if not rec.is_file():
        return False
    try:
        return json.loads(rec.read_text()).get("hash") == expected_hash
    except (json.JSONDecodeError, OSError):
        return False


@contextlib.contextmanager
def step_writer(final: Path, params: dict, info: dict | None = None) -> Iterator[Path]:
    """Yields a temp folder beside ``final``; on success writes ``step.json`` into it and renames it
    into place (:func:`trellis_ext.atomic.atomic_directory`); on an exception it is removed."""
    with atomic_directory(str(final), prefix=f"{final.name}{tmp_suffix()}-") as tmp:
        yield Path(tmp)
        write_json_atomic(Path(tmp) / STEP_RECORD, {"params": params, "hash": params_hash(params),
                                                   "info": info or {}, "finished": time.time()})


def remove_stale_tmp(folder: Path) -> None:
    """Delete leftovers of interrupted steps (``*.tmp-*``) anywhere under a clip folder. Called only
    while holding the clip's lock, so no live process is writing them."""
    if not folder.exists():
        return
    for p in sorted(folder.rglob(f"*{TMP_MARK}*"), key=lambda q: -len(q.parts)):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()


def spread_clips(clips: list, max_clips: int) -> list:
    """At most ``max_clips`` of ``clips`` (0: all): the moving ones (``end > start``; one-key poses dropped),
    picked evenly over their order (first and last included), so a character with dozens of clips gives a
    few different motions."""
    if max_clips <= 0 or len(clips) <= max_clips:
        return clips
    moving = [c for c in clips if c.end > c.start]
    if len(moving) <= max_clips:
        return moving
    picks = np.linspace(0, len(moving) - 1, max_clips).round().astype(int)
    return [moving[i] for i in picks]


def find_assets(inputs: list[str], extensions: tuple[str, ...]) -> list[tuple[Path, str]]:
    """(path, relative name) of every asset under the inputs, sorted by relative name. Two different
    files with one relative name (``a/Fox.glb`` and ``b/Fox.glb`` given together) are an :class:`InputError`."""
    found = {}

    def add(rel: str, q: Path) -> None:
        if rel in found and found[rel].resolve() != q.resolve():
            raise InputError(f"two inputs have the same name {rel!r}: {found[rel]} and {q}",
                             "give their common parent folder instead")
        found[rel] = q

    for inp in inputs:
        p = Path(inp)
        if p.is_file():
            add(p.name, p)
        elif p.is_dir():
            for q in sorted(p.rglob("*")):
                if q.is_file() and q.suffix.lower() in extensions:
                    add(str(q.relative_to(p)), q)
        else:
            raise FileNotFoundError(f"input not found: {inp}")
    return [(found[k], k) for k in sorted(found)]


def key_collisions(assets: list[tuple[Path, str]]) -> dict[str, str]:
    """{relative name: error} for assets whose clip ids would share folders (same :func:`asset_key`,
    e.g. ``Fox.glb`` and ``Fox.gltf``, or ``a b.glb`` and ``a-b.glb``). Checked over all assets, before
    sharding, so every rank agrees."""
    by_key: dict[str, list[str]] = {}
    for _, rel in assets:
        by_key.setdefault(asset_key(rel), []).append(rel)
    return {rel: f"clip folders collide: {', '.join(rels)} all map to clips/{key}__*; rename all but one"
            for key, rels in by_key.items() if len(rels) > 1 for rel in rels}


# ------------------------------------------------------------------------------------ config
@dataclass
class BuildConfig:
    output: Path
    frames: int = DEFAULT_FRAMES
    fps: float = DEFAULT_FPS
    time_mode: str = "clamp"
    animations: str = "first"
    max_clips: int = 0          # at most this many moving clips per asset, spread over its list (0: no cap)
    mesh_source: str = "auto"
    voxel_resolution: int = DEFAULT_RESOLUTION
    render: RenderSettings = field(default_factory=RenderSettings)
    renderer: str = "auto"
    feature_model: str | None = None
    aggregation: str = "visible"
    visibility_tolerance: float = DEFAULT_VISIBILITY_TOLERANCE
    feature_batch: int = DEFAULT_BATCH_SIZE
    ss_encoder: str | None = None
    ss_mirror: bool = False     # also the SS latents of the mirrored voxels (layout.mirrored_ss_set)
    slat_encoder: str | None = None
    device: str = "auto"
    static_iou: float = DEFAULT_STATIC_IOU
    max_voxels: int = DEFAULT_MAX_VOXELS
    skip_flagged: bool = False
    feature_dtype: str = "auto"
    steps: tuple[str, ...] = STEPS
    rank: int = 0
    world_size: int = 1
    overwrite: bool = False
    progress: bool = True
    threads: int = 0  # torch CPU threads (0 = torch's default)
    executor: str = "local"
    ray_address: str | None = None
    ray_gpus_per_task: float | None = None  # None: 1 when the Ray cluster has GPUs, else 0
    ray_cpus_per_task: float = 1.0
    ray_retries: int = 3


@dataclass
class Failure:
    asset: str
    clip: str | None
    step: str
    error: str


@dataclass
class RunSummary:
    rank: int
    world_size: int
    assets: int = 0
    clips_total: int = 0
    clips_ok: int = 0
    clips_flagged: int = 0
    clips_busy: list = field(default_factory=list)
    frames: int = 0
    steps_run: dict = field(default_factory=dict)
    steps_skipped: dict = field(default_factory=dict)
    step_seconds: dict = field(default_factory=dict)
    voxels_per_frame: list = field(default_factory=list)
    tokens_per_frame: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    seconds: float = 0.0
    notes: list = field(default_factory=list)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["voxels_per_frame"] = _describe(self.voxels_per_frame)
        d["tokens_per_frame"] = _describe(self.tokens_per_frame)
        return d


def _describe(values: list) -> dict:
    if not values:
        return {"count": 0}
    a = np.asarray(values, np.float64)
    return {"count": int(a.size), "mean": float(a.mean()), "min": int(a.min()), "max": int(a.max())}


# ------------------------------------------------------------------------------------ builder
class DatasetBuilder:
    """Runs the steps over this rank's share of the assets (see module docstring)."""

    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg
        self.out = Path(cfg.output)
        self.summary = RunSummary(rank=cfg.rank, world_size=cfg.world_size)
        self._renderer: str | None = None
        self._dino = None
        self._ss_enc = None
        self._slat_enc = None
        self._device = None
        self._digests: dict[str, str] = {}

    # ---------------------------------------------------------------- lazy resources
    @property
    def device(self) -> str:
        if self._device is None:
            import torch

            self._device = ("cuda" if torch.cuda.is_available() else "cpu") if self.cfg.device == "auto" \
                else self.cfg.device
        return self._device

    @property
    def renderer(self) -> str:
        if self._renderer is None:
            from .render import resolve_renderer

            self._renderer = resolve_renderer(self.cfg.renderer)
            self.cfg.render.torch_device = self.device
        return self._renderer

    @property
    def feature_dtype(self) -> str:
        """``--feature-dtype``; ``auto``: bfloat16 on CUDA, float32 elsewhere."""
        if self.cfg.feature_dtype != "auto":
            return self.cfg.feature_dtype
        return "bfloat16" if self.device.startswith("cuda") else "float32"

    def dino(self):
        """The DINOv2 encoder, loaded on first use only (a rerun with nothing to do never loads it)."""
        if self._dino is None:
            import torch

            from ss4d.conditioning.dinov2 import load_dinov2

            self._dino = load_dinov2(self.cfg.feature_model, device=self.device,
                                     dtype=getattr(torch, self.feature_dtype))
        return self._dino

    def digest(self, source: str) -> str:
        """:func:`weights_digest`, once per run and source."""
        if source not in self._digests:
            self._digests[source] = weights_digest(source)
        return self._digests[source]

    @property
    def feature_name(self) -> str | None:
        if not self.cfg.feature_model:
            return None
        from ss4d.conditioning.dinov2 import dinov2_name

        return f"{dinov2_name(self.cfg.feature_model)}_{self.cfg.aggregation}"

    def ss_encoder(self):
        if self._ss_enc is None:
            from .encode import load_encoder

            self._ss_enc = load_encoder(self.cfg.ss_encoder, self.device)
        return self._ss_enc

    def slat_encoder(self):
        if self._slat_enc is None:
            from .encode import load_encoder

            self._slat_enc = load_encoder(self.cfg.slat_encoder, self.device)
        return self._slat_enc

    # ---------------------------------------------------------------- run
    def run(self, inputs: list[str], extensions: tuple[str, ...] = DEFAULT_EXTENSIONS) -> RunSummary:
        """Build this rank's share of the assets under ``inputs`` (in this process, or as Ray tasks
        with ``executor="ray"``), then rewrite the tables (and the statistics on a single rank)."""
        t0 = time.time()
        cfg = self.cfg
        (self.out / CLIPS_DIR).mkdir(parents=True, exist_ok=True)
        assets = find_assets(inputs, extensions)
        collisions = key_collisions(assets)
        mine = [(path, rel, collisions.get(rel)) for i, (path, rel) in enumerate(assets)
                if i % cfg.world_size == cfg.rank]
        self.summary.assets = len(mine)
        self._notes()
        if cfg.executor == "ray":
            from .ray_executor import run_on_ray

            self.summary = run_on_ray(cfg, mine, self.summary)
        else:
            bar = _progress(mine, cfg.progress, desc=f"rank {cfg.rank}/{cfg.world_size}")
            for path, rel, collision in bar:
                if hasattr(bar, "set_postfix_str"):
                    bar.set_postfix_str(rel[:40])
                self.process_asset(path, rel, collision)
        self.summary.seconds = time.time() - t0
        write_metadata(self.out)
        if cfg.world_size == 1:
            compute_latent_stats(self.out)
        write_json_atomic(self.out / f"summary_rank{cfg.rank}.json", self.summary.as_dict())
        return self.summary

    def process_asset(self, path: Path, rel: str, collision: str | None = None,
                      only_clips: set[str] | None = None) -> list[str]:
        """Every selected clip of one asset (``only_clips``: just those ids); returns the ids of the
        clips that finished ok. An asset that cannot be opened (or whose clip folders would collide
        with another asset's: ``collision``) is recorded in ``failed_assets/``
        (:func:`~ss4d.data.layout.failed_asset_record`)."""
        key = asset_key(rel)
        failed_rec = failed_asset_record(self.out, rel)
        try:
            if collision:
                raise ValueError(collision)
            sha = file_sha256(path)
            clips = self._select_clips(path)
        except Exception as exc:  # corrupt / unsupported asset: report and continue
            msg = self._fail(rel, None, "open", exc)
            write_json_atomic(failed_rec, {"asset_key": key, "source": rel, "status": STATUS_FAILED,
                                           "error": f"[open] {msg}"})
            return []
        if failed_rec.is_file():  # written by an earlier run of this builder; the asset opens now
            failed_rec.unlink()
        done = []
        for clip in clips:
            clip_id = make_clip_id(key, clip.index, clip.name)
            if only_clips is not None and clip_id not in only_clips:
                continue
            self.summary.clips_total += 1
            if self._process_clip(path, rel, sha, clip, clip_id):
                done.append(clip_id)
        return done

    def _notes(self) -> None:
        cfg, notes = self.cfg, self.summary.notes
        if "features" in cfg.steps and not cfg.feature_model:
            notes.append("features skipped: no --feature-model given")
        if "ss_latent" in cfg.steps and not cfg.ss_encoder:
            notes.append("SS latents skipped: no --ss-encoder given")
        if "latent" in cfg.steps and not cfg.slat_encoder:
            notes.append("SLat latents skipped: no --slat-encoder given")
        if "latent" in cfg.steps and cfg.slat_encoder and not cfg.feature_model:
            notes.append("SLat latents skipped: they need --feature-model")
        for n in notes:
            log.info(n)

    def _fail(self, rel: str, clip_id: str | None, step: str, exc: BaseException) -> str:
        msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
        self.summary.failures.append(asdict(Failure(rel, clip_id, step, msg)))
        log.warning("FAILED %s%s [%s]: %s", rel, f" ({clip_id})" if clip_id else "", step, msg)
        log.debug("%s", traceback.format_exc())
        return msg

    def _select_clips(self, path: Path):
        from .gltf_animation import ClipInfo, list_clips

        if self._use_blender_mesh(path):
            clips = [ClipInfo(index=None if c["name"] is None else i, name=c["name"] or "static",
                              start=c["start"], end=c["end"]) for i, c in enumerate(_blender_list_clips(path))]
        else:
            clips = list_clips(path)
        sel = self.cfg.animations
        if sel == "first":
            picked = clips[:1]
        elif sel == "all":
            picked = clips
        else:
            wanted = [s.strip() for s in sel.split(",") if s.strip()]
            picked = [c for c in clips if c.name in wanted]
            if not picked:
                raise ValueError(f"none of the animations {wanted} exist (have {[c.name for c in clips]})")
        return spread_clips(picked, self.cfg.max_clips)

    def _use_blender_mesh(self, path: Path) -> bool:
        src = self.cfg.mesh_source
        if src == "blender":
            return True
        if src == "native":
            if path.suffix.lower() not in NATIVE_EXTENSIONS:
                raise ValueError(f"{path.suffix} files need --mesh-source blender (the Blender environment)")
            return False
        return path.suffix.lower() not in NATIVE_EXTENSIONS

    # ---------------------------------------------------------------- per clip
    def _process_clip(self, path: Path, rel: str, sha: str, clip, clip_id: str) -> bool:
        """All steps of one clip under its lock; True when it finished ok. A clip another process
        holds (an overlapping run) is left alone and listed in ``clips_busy``."""
        paths = ClipPaths(self.out, clip_id)
        with clip_lock(paths.lock) as locked:
            if not locked:
                self.summary.clips_busy.append(clip_id)
                log.warning("%s is being built by another process; left to it", clip_id)
                return False
            return self._process_locked_clip(path, rel, sha, clip, paths)

    def _process_locked_clip(self, path: Path, rel: str, sha: str, clip, paths: ClipPaths) -> bool:
        cfg, clip_id, cdir = self.cfg, paths.clip_id, paths.dir
        remove_stale_tmp(cdir)
        rec_path = paths.record
        record = json.loads(rec_path.read_text()) if rec_path.is_file() else {}
        record.update({"clip_id": clip_id, "asset_key": asset_key(rel), "source": rel, "animation": clip.name,
                       "animation_index": clip.index, "clip_start": clip.start, "clip_duration": clip.duration,
                       "sha256": sha})
        step = "mesh"
        ok = False
        try:
            ctx = _ClipContext(self, path, clip, cdir, record)
            for step in STEPS:  # steps not in --steps only check their outputs (dependents need them)
                t0 = time.time()
                getattr(ctx, f"step_{step}")()
                if step in cfg.steps:
                    sec = self.summary.step_seconds
                    sec[step] = round(sec.get(step, 0.0) + time.time() - t0, 3)
                if step == "voxelize" and record.get("flagged") and cfg.skip_flagged:
                    log.info("%s flagged (%s); later steps skipped", clip_id, ", ".join(record["flags"]))
                    break
            record["status"] = STATUS_OK
            ok = True
            record.pop("error", None)
            self.summary.clips_ok += 1
            self.summary.clips_flagged += bool(record.get("flagged"))
            self.summary.frames += int(record.get("num_frames", 0))
            self.summary.voxels_per_frame += record.get("voxels_per_frame", [])
            if self.feature_name and self.feature_name in record.get("features", {}):
                self.summary.tokens_per_frame += record["features"][self.feature_name]["tokens_per_frame"]
        except Exception as exc:
            record["status"] = STATUS_FAILED
            record["error"] = f"[{step}] {self._fail(rel, clip_id, step, exc)}"
        write_json_atomic(rec_path, record)
        return ok

    def count(self, step: str, ran: bool) -> None:
        d = self.summary.steps_run if ran else self.summary.steps_skipped
        d[step] = d.get(step, 0) + 1


class _ClipContext:
    """State shared by the steps of one clip (lazily loaded mesh, voxels, params chain)."""

    def __init__(self, b: DatasetBuilder, path: Path, clip, cdir: Path, record: dict):
        self.b, self.cfg, self.path, self.clip, self.cdir, self.record = b, b.cfg, path, clip, cdir, record
        self.paths = ClipPaths(b.out, record["clip_id"])
        self._seq = None
        self.hashes: dict[str, str] = {}
        self.missing: set[str] = set()  # steps outside --steps whose outputs are absent or stale

    def _run(self, step: str, folder: Path, params: dict) -> bool:
        """True if the step must run now. Records the expected hash either way; a step outside
        ``--steps`` never runs and is noted as missing when its outputs do not match."""
        h = params_hash(params)
        self.hashes[step] = h
        wanted = step in self.cfg.steps
        done = step_done(folder, h) and not (self.cfg.overwrite and wanted)
        if not wanted:
            if not done:
                self.missing.add(step)
            return False
        self.b.count(step, not done)
        return not done

    def _need(self, *steps: str) -> None:
        for st in steps:
            if st in self.missing:
                raise RuntimeError(f"step '{st}' has no up-to-date output for these settings; "
                                   f"add it to --steps (or match the earlier --renderer/--views/... flags)")

    # ---------------------------------------------------------------- mesh
    @property
    def seq(self):
        if self._seq is None:
            from .mesh import load_mesh_sequence

            self._seq = load_mesh_sequence(self.paths.mesh)
        return self._seq

    def _load_poses(self, blender: bool, times: np.ndarray):
        """Un-normalised MeshSequence of the clip at ``times`` (native glTF loader or Blender)."""
        from .gltf_animation import load_animated_mesh

        if blender:
            return _blender_extract(self.path, None if self.clip.index is None else self.clip.name, times, self.cdir)
        return load_animated_mesh(self.path, self.clip.index, times, normalize=False)

    def _sample_clip(self, blender: bool):
        """(un-normalised MeshSequence of the frames, time mode used, cyclic): ``cyclic`` when the
        clip's first and last poses match; ``loop-if-cyclic`` then loops, else clamps."""
        from dataclasses import replace

        from .gltf_animation import sample_times
        from .mesh import poses_match

        cfg, clip = self.cfg, self.clip
        ends = np.array([clip.start, clip.end], np.float64)
        if cfg.time_mode == LOOP_IF_CYCLIC:
            pair = self._load_poses(blender, ends).vertices
            cyclic = clip.duration > 0 and poses_match(pair[0], pair[1])
            mode = "loop" if cyclic else "clamp"
            return self._load_poses(blender, sample_times(clip, cfg.frames, cfg.fps, mode)), mode, cyclic
        mode = cfg.time_mode
        both = self._load_poses(blender, np.concatenate([sample_times(clip, cfg.frames, cfg.fps, mode), ends]))
        cyclic = clip.duration > 0 and poses_match(both.vertices[-2], both.vertices[-1])
        return replace(both, vertices=both.vertices[:-2], times=both.times[:-2]), mode, cyclic

    def step_mesh(self) -> None:
        from .gltf_animation import count_real_frames
        from .mesh import normalize_clip, save_mesh_sequence

        cfg, clip = self.cfg, self.clip
        blender = self.b._use_blender_mesh(self.path)
        params = {"sha256": self.record["sha256"], "animation": clip.name, "animation_index": clip.index,
                  "clip_start": clip.start, "clip_end": clip.end, "frames": cfg.frames, "fps": cfg.fps,
                  "time_mode": cfg.time_mode, "mesh_source": "blender" if blender else "native"}
        folder = self.paths.mesh
        if self._run("mesh", folder, params):
            seq, mode, cyclic = self._sample_clip(blender)
            seq = normalize_clip(seq)
            info = {"vertices": seq.num_vertices, "faces": len(seq.faces), "time_mode_used": mode, "cyclic": cyclic,
                    "num_real_frames": count_real_frames(clip, cfg.frames, cfg.fps, mode, cyclic)}
            with step_writer(folder, params, info) as tmp:
                save_mesh_sequence(seq, tmp)
            self._seq = seq
        if "mesh" in self.missing:
            return
        s = self.seq
        info = json.loads((folder / STEP_RECORD).read_text())["info"]
        self.record.update({"num_frames": s.num_frames, "num_real_frames": int(info["num_real_frames"]),
                            "fps": cfg.fps, "time_mode": cfg.time_mode, "time_mode_used": info["time_mode_used"],
                            "cyclic": bool(info["cyclic"]), "times": [float(t) for t in s.times],
                            "mesh_vertices": s.num_vertices, "mesh_faces": int(len(s.faces)),
                            "normalization": s.normalization})

    # ---------------------------------------------------------------- voxels
    def step_voxelize(self) -> None:
        from .voxelize import load_voxels, save_voxels, voxel_iou, voxelize_surface

        cfg = self.cfg
        res = cfg.voxel_resolution
        params = {"mesh": self.hashes.get("mesh"), "resolution": res}
        folder = self.paths.voxels
        if self._run("voxelize", folder, params):
            self._need("mesh")
            with step_writer(folder, params) as tmp:
                for t in range(self.seq.num_frames):
                    save_voxels(tmp / frame_file(t), voxelize_surface(self.seq.vertices[t], self.seq.faces, res), res)
        if "voxelize" in self.missing:
            return
        vox = [load_voxels(folder / frame_file(t))[0] for t in range(self.record["num_frames"])]
        counts = [int(len(v)) for v in vox]
        ious = [voxel_iou(vox[0], v, res) for v in vox[1:]]
        flags = []
        if min(counts) == 0:
            flags.append("empty_frame")
        if not ious or min(ious) >= cfg.static_iou:
            flags.append("low_motion")
        if max(counts) > cfg.max_voxels:
            flags.append("over_budget")
        flagged = bool(flags)
        if num_real_frames_of(self.record) < self.record["num_frames"]:
            flags.append(SHORT_CLIP)  # informational: the frames past the end are marked, not dropped
        self.record.update({"voxel_resolution": res, "voxels_per_frame": counts,
                            "num_voxels_mean": float(np.mean(counts)), "num_voxels_max": max(counts),
                            "motion_iou_min": float(min(ious)) if ious else 1.0, "flags": flags,
                            "flagged": flagged, "voxelized": True})

    # ---------------------------------------------------------------- renders
    def _render_params(self) -> dict:
        r = self.cfg.render
        return {"mesh": self.hashes.get("mesh"), "renderer": self.b.renderer, "views": r.num_views,
                "resolution": r.resolution, "radius": r.radius, "fov": r.fov_deg, "seed": r.seed,
                "samples": r.samples if self.b.renderer == "blender" else None,
                "ssaa": r.ssaa if self.b.renderer == "torch" else None}

    def _cond_params(self) -> dict:
        r = self.cfg.render
        return {"mesh": self.hashes.get("mesh"), "renderer": self.b.renderer, "camera": r.cond_camera,
                "resolution": r.cond_resolution, "fov": r.cond_fov_deg, "radius": r.radius, "seed": r.seed,
                "samples": r.samples if self.b.renderer == "blender" else None}

    def step_render(self) -> None:
        from .render import render_clip

        params = self._render_params()
        folder = self.paths.renders
        if self._run("render", folder, params):
            self._need("mesh")
            cond_params, cond_folder = self._cond_params(), self.paths.cond
            # Blender renders the conditioning video in the same job when it is due as well
            with_cond = ("cond" in self.cfg.steps and self._run("cond", cond_folder, cond_params))
            with step_writer(folder, params) as tmp:
                if with_cond:
                    with step_writer(cond_folder, cond_params) as ctmp:
                        render_clip(self.seq, self.paths.mesh, tmp, ctmp, self.record["clip_id"],
                                    self.cfg.render, self.b.renderer)
                    self.record["cond_rendered"] = True
                else:
                    render_clip(self.seq, self.paths.mesh, tmp, None, self.record["clip_id"],
                                self.cfg.render, self.b.renderer)
        if "render" in self.missing:
            return
        self.record.update({"rendered": True, "renderer": self.b.renderer, "num_views": self.cfg.render.num_views,
                            "render_resolution": self.cfg.render.resolution})

    def step_cond(self) -> None:
        from .render import render_clip

        if "cond" in self.hashes:  # already handled together with the views
            return
        params = self._cond_params()
        folder = self.paths.cond
        if self._run("cond", folder, params):
            self._need("mesh")
            with step_writer(folder, params) as tmp:
                render_clip(self.seq, self.paths.mesh, None, tmp, self.record["clip_id"], self.cfg.render,
                            self.b.renderer)
        if "cond" not in self.missing:
            self.record["cond_rendered"] = True

    # ---------------------------------------------------------------- features
    def step_features(self) -> None:
        if not self.cfg.feature_model:
            return
        from .features import aggregate_features, extract_patch_maps, images_to_tensor
        from .render import load_frame_renders
        from .voxelize import index_dtype, load_voxels

        cfg, b = self.cfg, self.b
        name = b.feature_name
        params = {"renders": self.hashes.get("render"), "voxels": self.hashes.get("voxelize"),
                  "model": b.digest(cfg.feature_model), "dtype": b.feature_dtype, "aggregation": cfg.aggregation,
                  "tolerance": cfg.visibility_tolerance}
        folder = self.paths.features(name)
        tokens = []
        if self._run("features", folder, params):
            self._need("render", "voxelize")
            enc = b.dino()

            def read(t: int):
                return load_frame_renders(self.paths.render_frame(t)), load_voxels(self.paths.voxel_frame(t))

            n = self.record["num_frames"]
            with step_writer(folder, params) as tmp, ThreadPoolExecutor(1) as io:
                nxt = io.submit(read, 0)
                for t in range(n):  # the next frame is read and decoded while the model runs on this one
                    (rgba, depth, cams), (idx, res) = nxt.result()
                    if t + 1 < n:
                        nxt = io.submit(read, t + 1)
                    maps = extract_patch_maps(enc, images_to_tensor(rgba), cfg.feature_batch)
                    vf = aggregate_features(idx, res, maps, cams, depth, cfg.aggregation, cfg.visibility_tolerance)
                    if len(vf.indices) == 0:
                        raise RuntimeError(f"frame {t}: no voxel is seen by any view")
                    np.savez_compressed(tmp / frame_file(t), indices=vf.indices.astype(index_dtype(res)),
                                        patchtokens=vf.feats.astype(np.float16),
                                        num_views=vf.num_views.astype(np.uint16), resolution=np.int64(res))
                    tokens.append(int(len(vf.indices)))
        elif "features" in self.missing:
            return
        else:
            for t in range(self.record["num_frames"]):
                with np.load(folder / frame_file(t)) as z:
                    tokens.append(int(len(z["indices"])))
        self.record.setdefault("features", {})[name] = {"aggregation": cfg.aggregation,
                                                        "tokens_per_frame": tokens,
                                                        "tokens_mean": float(np.mean(tokens))}

    def _ss_voxel_set(self, feature_set: str | None) -> list[np.ndarray]:
        """Per-frame voxel indices the SS latents encode: the voxels kept by ``feature_set`` (seen by a
        view, SS4D §4.3) when there is one, else every surface voxel."""
        from .voxelize import load_voxels

        n = self.record["num_frames"]
        if feature_set:
            return [load_feature_frame(self.paths.features(feature_set) / frame_file(t))[0] for t in range(n)]
        return [load_voxels(self.paths.voxel_frame(t))[0] for t in range(n)]

    # ---------------------------------------------------------------- latents
    def step_ss_latent(self) -> None:
        if not self.cfg.ss_encoder:
            return
        from .encode import encode_ss_latents, encoder_name

        base = encoder_name(self.cfg.ss_encoder)
        feat = self.b.feature_name if "features" not in self.missing else None
        params = {"voxels": self.hashes.get("voxelize"), "encoder": self.b.digest(self.cfg.ss_encoder)}
        if feat:  # the SS stage learns exactly the voxels the SLat stage gets (those seen by a view)
            params.update(features=self.hashes.get("features"), feature_set=feat)
        res = self.cfg.voxel_resolution
        sets = [(base, params, lambda v: v)]
        if self.cfg.ss_mirror:  # the structure flows' mirror augmentation (ss4d.training.mirror)
            sets.append((mirrored_ss_set(base), dict(params, mirror="x"), lambda v: mirror_voxels(v, res)))
        voxels = None  # the frames' voxel set, read once for both sets
        for name, p, transform in sets:
            folder = self.paths.ss_latents(name)
            if self._run("ss_latent", folder, p):
                self._need("voxelize")
                voxels = self._ss_voxel_set(feat) if voxels is None else voxels
                vox = [transform(v) for v in voxels]
                z = encode_ss_latents(self.b.ss_encoder(), vox, res)
                with step_writer(folder, p) as tmp:
                    for t in range(len(z)):
                        np.savez_compressed(tmp / frame_file(t), mean=z[t].astype(np.float32))
            if "ss_latent" not in self.missing:
                self.record.setdefault("ss_latents", {})[name] = {"voxel_set": f"features:{feat}" if feat else "all"}

    def step_latent(self) -> None:
        if not (self.cfg.slat_encoder and self.cfg.feature_model):
            return
        from .encode import encode_slat_latents, encoder_name
        from .voxelize import index_dtype

        res = self.cfg.voxel_resolution
        feat = self.b.feature_name
        name = latent_set_name(feat, encoder_name(self.cfg.slat_encoder))
        params = {"features": self.hashes.get("features"), "feature_set": feat,
                  "encoder": self.b.digest(self.cfg.slat_encoder)}
        folder = self.paths.latents(name)
        if self._run("latent", folder, params):
            self._need("features")
            frames = []
            for t in range(self.record["num_frames"]):
                frames.append(load_feature_frame(self.paths.features(feat) / frame_file(t)))
            lat = encode_slat_latents(self.b.slat_encoder(), frames)
            with step_writer(folder, params) as tmp:
                for t, (coords, feats) in enumerate(lat):
                    np.savez_compressed(tmp / frame_file(t), coords=coords.astype(index_dtype(res)),
                                        feats=feats.astype(np.float32))
        if "latent" not in self.missing:
            self.record.setdefault("latents", {})[name] = True


# ------------------------------------------------------------------------------------ blender mesh path
def _blender_list_clips(path: Path) -> list[dict]:
    import tempfile

    from .render import run_blender_job

    with tempfile.TemporaryDirectory(prefix="ss4d-blender-") as work:
        out = Path(work) / "clips.json"
        run_blender_job({"mode": "list", "source": str(path.resolve()), "output": str(out)}, Path(work))
        clips = json.loads(out.read_text())["clips"]
    return clips or [{"name": None, "start": 0.0, "end": 0.0}]


def _blender_extract(path: Path, clip_name: str | None, times: np.ndarray, work_parent: Path):
    import tempfile

    from .mesh import load_mesh_sequence
    from .render import run_blender_job

    with tempfile.TemporaryDirectory(prefix=f"extract{TMP_MARK}", dir=work_parent) as work:
        out = Path(work) / "mesh"
        run_blender_job({"mode": "extract", "source": str(path.resolve()), "clip": clip_name,
                         "times": [float(t) for t in times], "out_dir": str(out), "name": path.stem}, Path(work))
        seq = load_mesh_sequence(out)
    seq.source = str(path)
    return seq


# ------------------------------------------------------------------------------------ tables + stats
def write_metadata(out: Path) -> tuple[int, int]:
    """Rebuild ``metadata.csv`` (one row per clip, plus one per asset that failed to open) and
    ``frames.csv`` (one row per frame). Only current derived sets are advertised
    (:func:`~ss4d.data.layout.current_record`)."""
    out = Path(out)
    records = [current_record(out, r) for r in iter_clip_records(out)]
    dyn = sorted({f"feature_{k}" for r in records for k in r.get("features", {})}
                 | {f"ss_latent_{k}" for r in records for k in r.get("ss_latents", {})}
                 | {f"latent_{k}" for r in records for k in r.get("latents", {})})
    cols = METADATA_COLUMNS + dyn + [f"tokens_{c[len('feature_'):]}" for c in dyn if c.startswith("feature_")]
    rows, frame_rows = [], []
    for r in records:
        row = {c: r.get(c, "") for c in METADATA_COLUMNS}
        row["flags"] = ";".join(r.get("flags", []))
        for k, v in r.get("features", {}).items():
            row[f"feature_{k}"] = True
            row[f"tokens_{k}"] = v.get("tokens_mean", "")
        for k in r.get("ss_latents", {}):
            row[f"ss_latent_{k}"] = True
        for k in r.get("latents", {}):
            row[f"latent_{k}"] = True
        rows.append(row)
        if r.get("status") == STATUS_OK:
            for t in range(int(r.get("num_frames", 0))):
                frame_rows.append({"sha256": f"{r['clip_id']}_{t:03d}", "clip_id": r["clip_id"], "frame": t,
                                   "time": r["times"][t] if t < len(r.get("times", [])) else "",
                                   "past_end": t >= r["num_real_frames"],
                                   "num_voxels": r.get("voxels_per_frame", [""] * (t + 1))[t],
                                   "flagged": r.get("flagged", False)})
    for f in sorted((out / FAILED_ASSETS_DIR).glob("*.json")):  # assets that could not be opened
        try:
            rows.append(json.loads(f.read_text()))
        except (json.JSONDecodeError, OSError):
            continue
    _write_csv(out / METADATA_FILE, cols, rows)
    _write_csv(out / FRAMES_FILE, FRAMES_COLUMNS, frame_rows)
    return len(rows), len(frame_rows)


def _write_csv(path: Path, cols: list[str], rows: list[dict]) -> None:
    with atomic_file(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def compute_latent_stats(out: Path, include_flagged: bool = False) -> dict[str, dict]:
    """Per-channel mean/std of every SLat latent set (``latent_stats/<name>.json``) and SS latent
    set (``latent_stats/ss_<name>.json``) over the finished clips."""
    from .encode import LatentStats

    out = Path(out)
    acc: dict[str, LatentStats] = {}
    for r in iter_clip_records(out):
        r = current_record(out, r)
        if r.get("status") != STATUS_OK or (r.get("flagged") and not include_flagged):
            continue
        paths = ClipPaths(out, r["clip_id"])
        for name in r.get("latents", {}):
            st = acc.setdefault(name, LatentStats())
            for f in sorted(paths.latents(name).glob("*.npz")):
                st.update(load_slat_latent_frame(f)[1])
        for name in r.get("ss_latents", {}):
            st = acc.setdefault(ss_stats_name(name), LatentStats())
            for f in sorted(paths.ss_latents(name).glob("*.npz")):
                x = load_ss_latent_frame(f)
                st.update(np.moveaxis(x, 0, -1).reshape(-1, x.shape[0]))
    results = {}
    for name, st in acc.items():
        if st.count:
            results[name] = st.save(out / STATS_DIR / f"{name}.json")
    return results


# ------------------------------------------------------------------------------------ CLI
def _progress(items, enabled: bool, desc: str):
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, unit="asset", dynamic_ncols=True)


def build_parser() -> argparse.ArgumentParser:
    d = RenderSettings()
    p = argparse.ArgumentParser(
        prog="ss4d-build-dataset",
        description="Build an SS4D 4D training set from animated 3D assets (glTF/GLB natively; FBX/.blend via "
                    "Blender). See docs/data.md.")
    p.add_argument("inputs", nargs="*", help="asset files or folders (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="dataset folder (created; reused to resume)")
    g = p.add_argument_group("clips")
    g.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help=f"frames per clip (default {DEFAULT_FRAMES}, as SS4D)")
    g.add_argument("--fps", type=float, default=DEFAULT_FPS,
                   help=f"sampling rate in frames per second (default {DEFAULT_FPS:g})")
    g.add_argument("--time-mode", choices=BUILD_TIME_MODES, default="clamp",
                   help="clamp: hold the last pose past the clip end; loop: wrap; loop-if-cyclic: loop clips whose "
                        "first and last poses match, clamp the others; stretch: spread --frames over the whole clip "
                        "(ignores --fps). Frames past the clip's end are marked (num_real_frames, past_end)")
    g.add_argument("--animations", default="first", help="first | all | comma-separated animation names")
    g.add_argument("--max-clips-per-asset", type=int, default=0, metavar="N",
                   help="keep at most N of each asset's selected clips: the moving ones (a span > 0), N of them "
                        "spread evenly over the asset's list (default 0: keep all)")
    g.add_argument("--mesh-source", choices=("auto", "native", "blender"), default="auto",
                   help="auto: glTF/GLB with the numpy loader, other formats through Blender")
    g.add_argument("--extensions", default=",".join(DEFAULT_EXTENSIONS), help="file types to pick up in folders")
    g = p.add_argument_group("rendering")
    g.add_argument("--renderer", choices=("auto", "blender", "torch"), default="auto",
                   help="auto: Blender when its environment exists (make setup-blender), else the torch rasteriser")
    g.add_argument("--views", type=int, default=d.num_views, help=f"views per frame (default {d.num_views})")
    g.add_argument("--resolution", type=int, default=d.resolution, help="view resolution in pixels")
    g.add_argument("--radius", type=float, default=d.radius, help=f"camera distance (default {d.radius:g})")
    g.add_argument("--fov", type=float, default=d.fov_deg, help=f"field of view in degrees (default {d.fov_deg:g})")
    g.add_argument("--cond-camera", choices=("front", "random"), default=d.cond_camera,
                   help="fixed camera of the conditioning video")
    g.add_argument("--cond-resolution", type=int, default=None, help="conditioning video size (default --resolution)")
    g.add_argument("--no-cond-video", action="store_true", help="do not write cond/video.mp4 previews")
    g.add_argument("--samples", type=int, default=d.samples, help="Cycles samples per pixel")
    g.add_argument("--denoise", action="store_true", help="Cycles denoising (OpenImageDenoise)")
    g.add_argument("--blender-device", choices=("auto", "cpu", "gpu"), default="auto")
    g.add_argument("--blender-threads", type=int, default=0, help="Cycles CPU threads (0 = all)")
    g.add_argument("--blender-timeout", type=float, default=0,
                   help="seconds before a clip's Blender job is killed and the clip reported as failed (0 = none)")
    g.add_argument("--ssaa", type=int, default=d.ssaa, help="torch renderer supersampling per axis")
    g.add_argument("--seed", type=int, default=0, help="camera randomisation seed")
    g = p.add_argument_group("voxels, features, latents")
    g.add_argument("--voxel-resolution", type=int, default=DEFAULT_RESOLUTION,
                   help=f"surface voxel grid per axis over [-0.5, 0.5]^3 (default {DEFAULT_RESOLUTION}, TRELLIS)")
    g.add_argument("--feature-model", default=None,
                   help="DINOv2-reg source: a local transformers folder, a torch.hub checkpoint, or tiny-random "
                        "(tests); features are skipped without it")
    g.add_argument("--aggregation", choices=AGGREGATIONS, default="visible",
                   help="visible: average only views that see the voxel (SS4D); mean: all views (TRELLIS)")
    g.add_argument("--visibility-tolerance", type=float, default=DEFAULT_VISIBILITY_TOLERANCE,
                   help="depth-test slack in voxel diagonals")
    g.add_argument("--feature-dtype", choices=FEATURE_DTYPES, default="auto",
                   help="DINOv2 precision (auto: bfloat16 on CUDA, float32 on CPU)")
    g.add_argument("--feature-batch", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"views per DINOv2 batch (default {DEFAULT_BATCH_SIZE})")
    g.add_argument("--ss-encoder", default=None, help="SS VAE encoder checkpoint stem (<path>.json/.safetensors)")
    g.add_argument("--ss-mirror", action="store_true",
                   help="also encode every frame's voxels mirrored across x = 0 (the set <enc>__mirror_x): what "
                        "the structure flows' mirror augmentation (dataset.mirror) reads")
    g.add_argument("--slat-encoder", default=None, help="SLat (3D or 4D) encoder checkpoint stem")
    g.add_argument("--device", default="auto", help="torch device for features/encoders (auto: cuda if present)")
    g.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0 = torch's default; 1 is fastest on small/busy machines)")
    g = p.add_argument_group("filtering")
    g.add_argument("--static-iou", type=float, default=DEFAULT_STATIC_IOU,
                   help="flag a clip as low-motion when every frame's voxel IoU with frame 0 is >= this")
    g.add_argument("--max-voxels", type=int, default=DEFAULT_MAX_VOXELS, help="flag clips with more voxels in a frame")
    g.add_argument("--skip-flagged", action="store_true", help="stop processing flagged clips after voxelisation")
    g = p.add_argument_group("running")
    g.add_argument("--steps", default=",".join(STEPS), help=f"subset of {','.join(STEPS)}")
    g.add_argument("--rank", type=int, default=None, help="this process's shard (default $RANK or 0)")
    g.add_argument("--world-size", type=int, default=None, help="number of shards (default $WORLD_SIZE or 1)")
    g.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: this process; ray: one task per asset and stage on a Ray cluster (pip install "
                        "'.[ray]'; CPU steps mesh/voxelize, then GPU steps render..latent)")
    g.add_argument("--ray-address", default=None,
                   help="Ray cluster to join (default: $RAY_ADDRESS, else a local cluster on this machine)")
    g.add_argument("--ray-gpus-per-task", type=float, default=None,
                   help="GPUs per rendering/feature task (default: 1 when the cluster has GPUs, else 0)")
    g.add_argument("--ray-cpus-per-task", type=float, default=1.0, help="CPUs per task (default 1)")
    g.add_argument("--ray-retries", type=int, default=3,
                   help="retries of a task whose worker died (node lost, out of memory); default 3")
    g.add_argument("--overwrite", action="store_true", help="redo finished steps")
    g.add_argument("--merge-only", action="store_true",
                   help="only rebuild metadata.csv / frames.csv and latent statistics from finished clips")
    g.add_argument("--no-progress", action="store_true")
    g.add_argument("--strict", action="store_true", help="exit with status 1 if any asset or clip failed")
    g.add_argument("-v", "--verbose", action="store_true")
    return p


def user_error(msg: str) -> None:
    """One line on stderr, exit status 2 (a mistake the user can fix)."""
    print(f"ss4d-build-dataset: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def config_from_args(a: argparse.Namespace) -> BuildConfig:
    err = user_error

    rank = a.rank if a.rank is not None else int(os.environ.get("RANK", 0))
    world = a.world_size if a.world_size is not None else int(os.environ.get("WORLD_SIZE", 1))
    if world < 1 or not 0 <= rank < world:
        err(f"need 0 <= rank < world_size, got rank {rank}, world size {world}")
    steps = tuple(s.strip() for s in a.steps.split(",") if s.strip())
    bad = [s for s in steps if s not in STEPS]
    if bad:
        err(f"unknown steps {bad}; choose from {list(STEPS)}")
    for name, val, lo in (("--frames", a.frames, 1), ("--views", a.views, 1), ("--resolution", a.resolution, 8),
                          ("--voxel-resolution", a.voxel_resolution, 2), ("--samples", a.samples, 1),
                          ("--ssaa", a.ssaa, 1), ("--max-clips-per-asset", a.max_clips_per_asset, 0)):
        if val < lo:
            err(f"{name} must be >= {lo}, got {val}")
    render = RenderSettings(num_views=a.views, resolution=a.resolution, radius=a.radius, fov_deg=a.fov,
                            cond_camera=a.cond_camera, cond_resolution=a.cond_resolution or a.resolution,
                            cond_fov_deg=a.fov, cond_video=not a.no_cond_video, samples=a.samples,
                            denoise=a.denoise, device=a.blender_device, threads=a.blender_threads, ssaa=a.ssaa,
                            seed=a.seed, timeout_s=a.blender_timeout)
    return BuildConfig(output=Path(a.output), frames=a.frames, fps=a.fps, time_mode=a.time_mode,
                       animations=a.animations, max_clips=a.max_clips_per_asset, mesh_source=a.mesh_source,
                       voxel_resolution=a.voxel_resolution,
                       render=render, renderer=a.renderer, feature_model=a.feature_model,
                       aggregation=a.aggregation, visibility_tolerance=a.visibility_tolerance,
                       feature_batch=a.feature_batch, ss_encoder=a.ss_encoder, ss_mirror=a.ss_mirror,
                       slat_encoder=a.slat_encoder,
                       device=a.device, static_iou=a.static_iou, max_voxels=a.max_voxels,
                       skip_flagged=a.skip_flagged, feature_dtype=a.feature_dtype, steps=steps, rank=rank,
                       world_size=world, overwrite=a.overwrite, progress=not a.no_progress, threads=a.threads,
                       executor=a.executor, ray_address=a.ray_address, ray_gpus_per_task=a.ray_gpus_per_task,
                       ray_cpus_per_task=a.ray_cpus_per_task, ray_retries=a.ray_retries)


def format_summary(s: RunSummary, out: Path) -> str:
    d = s.as_dict()
    v, tk = d["voxels_per_frame"], d["tokens_per_frame"]
    lines = [f"ss4d-build-dataset rank {s.rank}/{s.world_size}: {s.assets} assets, {s.clips_total} clips "
             f"({s.clips_ok} ok, {s.clips_flagged} flagged), {len(s.failures)} failures, {s.frames} frames, "
             f"{s.seconds:.1f}s -> {out}"]
    if v.get("count"):
        lines.append(f"  voxels/frame: mean {v['mean']:.0f}, min {v['min']}, max {v['max']}")
    if tk.get("count"):
        lines.append(f"  feature tokens/frame: mean {tk['mean']:.0f}, min {tk['min']}, max {tk['max']}")
    lines.append(f"  steps run: {s.steps_run or '-'}; skipped (already done): {s.steps_skipped or '-'}")
    lines.append(f"  seconds per step: {s.step_seconds or '-'}")
    if s.clips_busy:
        lines.append(f"  left to another running build (locked): {len(s.clips_busy)} clips, e.g. {s.clips_busy[0]}")
    for n in s.notes:
        lines.append(f"  note: {n}")
    for f in s.failures:
        lines.append(f"  FAILED {f['asset']}{' / ' + f['clip'] if f['clip'] else ''} [{f['step']}]: {f['error']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    if args.merge_only:
        n_clips, n_frames = write_metadata(cfg.output)
        stats = compute_latent_stats(cfg.output)
        print(f"merged {n_clips} clips / {n_frames} frames into {cfg.output / METADATA_FILE}; "
              f"latent stats: {sorted(stats) or 'none'}")
        return 0
    if not args.inputs:
        user_error("give at least one asset file or folder")
    exts = tuple(e if e.startswith(".") else "." + e for e in args.extensions.lower().split(",") if e)
    try:
        summary = DatasetBuilder(cfg).run(args.inputs, exts)
    except (FileNotFoundError, InputError) as exc:
        user_error(str(exc))
    print(format_summary(summary, cfg.output))
    return 1 if (args.strict and summary.failures) else 0


if __name__ == "__main__":
    sys.exit(main())

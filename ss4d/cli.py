"""``ss4d-generate``: a video of a moving object -> per-frame 3D Gaussians, voxels and videos.

Exit codes: 0 success, 2 bad input (the message says what is wrong and what to do), 1 internal
error or unusable result, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM from ``kill``,
``timeout``, Docker, schedulers). Errors are one line on stderr; ``--debug`` adds the traceback.
An interrupted or failed run leaves no output and no temp folder.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import List, Optional

from .exit_codes import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, report_error
from .default_model import MODEL_ENV, OFFICIAL_DIR, resolve_model
from .io.output import PRODUCER
from .presets import DEFAULT_PRESET, PRESETS, SOLVER_CHOICES, resolve_preset

__all__ = ["main", "build_parser", "sampler_settings", "EXIT_OK", "EXIT_INTERNAL", "EXIT_BAD_INPUT", "DEFAULT_MODEL_ENV"]

PROG = PRODUCER  # "ss4d-generate": result.json's command[0] marks a folder as an ss4d output
MAX_SEED = 2 ** 63 - 1  # torch generators take a signed 64-bit seed on every device
DEFAULT_MODEL_ENV = MODEL_ENV
BATCH_JSON = "batch.json"  # the per-item summary of a --batch run
DEFAULT_MODEL = OFFICIAL_DIR
CPU_RESOLUTION, CUDA_RESOLUTION = 256, 512
MIN_RESOLUTION, MAX_RESOLUTION = 16, 4096  # render sizes accepted by --resolution
MIN_TURNTABLE_FPS = 8.0  # the turntable loops the clip; slow clips would make it crawl

DESCRIPTION = """\
Turn a short video of one moving object into a 4D asset with SS4D: one set of 3D Gaussians per
frame (standard 3DGS .ply files), the occupied voxels per frame (.npz), and videos rendered from new
viewpoints.

VIDEO is a video file (.mp4 .mov .webm .mkv .avi .m4v), an animated .gif, or a folder of frames
(0.png, 1.png, ... in natural order; RGBA PNGs keep their transparency). The object is cut out by
its alpha channel, by --mask-dir, or by the built-in solid-background matting (plain white or
single-colour backgrounds); cluttered backgrounds need masks or rembg.
"""

EPILOG = """\
frames: SS4D needs an even number of frames (>= 2). By default the first 32 selected frames are
  used; an odd selection drops its last frame; an odd --frames is refused.
outputs (in OUT): gaussians/frame_000.ply ..., coords/frame_000.npz ..., input/frame_000.png ...,
  renders/{novel,turntable,grid,compare}.mp4 (+ .png of the first frame), result.json; with --export:
  animation.glb, mesh/frame_000.{obj,ply}, splat/frame_000.splat (listed under "files" in result.json).
  OUT is written atomically: it appears only when everything is written.
model: a local folder with SS4D's pipeline.json and ckpts/ (lizb6626/SS4D on the Hugging Face hub;
  see checkpoints/README.md), default $SS4D_MODEL or ./checkpoints/SS4D.

example:
  ss4d-generate clip.mp4 -o out/clip --model checkpoints/SS4D --frames 16 --seed 1
  ss4d-generate frames_dir/ --render grid,compare --resolution 512 --device cuda
  ss4d-generate clip.mp4 --export glb,splat
  ss4d-generate clip.mp4 --preset fast --device cuda --dtype bf16 --compile   (faster; see README)
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2)."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{PROG}: error: {message} (see {PROG} --help)\n")


class _Terminated(BaseException):
    """Raised in the main thread by SIGTERM, so every ``finally`` and atomic writer cleans up."""


def _int_at_least(name: str, low: int, high: Optional[int] = None, why: str = ""):
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {s!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{name} must be >= {low}, got {v}{why}")
        if high is not None and v > high:
            raise argparse.ArgumentTypeError(f"{name} must be <= {high}, got {v}{why}")
        return v
    return parse


def _nonneg_float(name: str):
    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {s!r}") from None
        if not v >= 0 or v == float("inf"):
            raise argparse.ArgumentTypeError(f"{name} must be a finite number >= 0, got {s}")
        return v
    return parse


def _render_list(s: str) -> List[str]:
    from .render import RENDER_KINDS

    s = s.strip().lower()
    if s == "none":
        return []
    if s == "all":
        return list(RENDER_KINDS)
    kinds = [k.strip() for k in s.split(",") if k.strip()]
    bad = [k for k in kinds if k not in RENDER_KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"unknown render kind(s) {', '.join(bad) or s!r}; use a comma list of "
                                         f"{', '.join(RENDER_KINDS)}, or all / none")
    return list(dict.fromkeys(kinds))


def _export_list(s: str) -> List[str]:
    from .exports import parse_export_list

    try:
        return parse_export_list(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    from .io.video import MIN_FRAMES

    p = _Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    p.add_argument("video", metavar="VIDEO", help="video file, animated GIF, or folder of frames")
    p.add_argument("-o", "--output", metavar="OUT", help="output folder (default: outputs/<VIDEO name>)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT if it is a previous ss4d output (a folder holding anything else is refused)")
    p.add_argument("--model", metavar="PATH", help=f"SS4D model folder (default: ${DEFAULT_MODEL_ENV}, else "
                   f"{DEFAULT_MODEL} when present, else the small model shipped in checkpoints/ss4d-small)")
    p.add_argument("--dinov2", metavar="PATH", help="DINOv2-with-registers weights, if not inside the model folder "
                   "(transformers folder or torch.hub .pth)")

    g = p.add_argument_group("frames")
    g.add_argument("--frames", metavar="N",
                   type=_int_at_least("--frames", MIN_FRAMES, why=" (SS4D needs at least one pair of frames)"),
                   help="number of frames to use, even (default: all selected, at most 32)")
    g.add_argument("--start", type=_int_at_least("--start", 0), default=0, metavar="I", help="first source frame (default 0)")
    g.add_argument("--stride", type=_int_at_least("--stride", 1), default=1, metavar="K",
                   help="use every K-th frame (default 1)")
    g.add_argument("--fps", type=float, metavar="F", help="resample the video to F frames per second first")
    g.add_argument("--matting", default="auto", choices=["auto", "alpha", "solid", "rembg", "mask-dir"],
                   help="how to cut out the object (default auto: alpha, else --mask-dir, else a solid "
                        "background, else rembg)")
    g.add_argument("--mask-dir", metavar="DIR", help="one mask image per frame (white = object)")

    g = p.add_argument_group("sampling")
    g.add_argument("--preset", default=DEFAULT_PRESET, choices=list(PRESETS),
                   help="sampler preset: default = the model folder's settings (faithful); fast = "
                        f"{PRESETS['fast'].summary} (under half the model passes; explicit flags below override "
                        "it; quality vs default in README 'Performance')")
    g.add_argument("--steps-ss", type=_int_at_least("--steps-ss", 1), metavar="N",
                   help="sparse-structure steps (default: the preset's, else the model folder's)")
    g.add_argument("--steps-slat", type=_int_at_least("--steps-slat", 1), metavar="N",
                   help="structured-latent steps (default: the preset's, else the model folder's)")
    g.add_argument("--solver", choices=list(SOLVER_CHOICES),
                   help="integration rule: euler (the model folder's) or heun (second order, two model "
                        "evaluations per step; default: the preset's)")
    g.add_argument("--cfg-ss", type=_nonneg_float("--cfg-ss"), metavar="F", help="sparse-structure guidance strength")
    g.add_argument("--cfg-slat", type=_nonneg_float("--cfg-slat"), metavar="F", help="structured-latent guidance strength")
    g.add_argument("--seed", type=_int_at_least("--seed", 0, MAX_SEED), default=42, metavar="N",
                   help=f"random seed, 0..{MAX_SEED} (default 42)")

    g = p.add_argument_group("runtime")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: cuda if available")
    g.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="model precision (default: fp16 on CUDA, fp32 on CPU)")
    g.add_argument("--fp8", action="store_true",
                   help="FP8 matmuls in the flow trunks' linear layers (torchao; a CUDA GPU with compute "
                        "capability >= 8.9, e.g. H100/H200/L40/RTX 4090; bf16 torsos; changes the numbers: "
                        "render PSNR vs bf16 from scripts/bench_pipeline.py's GPU run)")
    g.add_argument("--threads", type=_int_at_least("--threads", 1), metavar="N",
                   help="CPU threads for torch (default: the idle CPU cores, 1 for tiny test models; 1 is "
                        "much faster when the cores are shared with other busy processes)")

    g.add_argument("--batch", action="store_true",
                   help="VIDEO is a folder of inputs (videos, GIFs, frame folders) or a .txt list (one path a "
                        "line): the model loads once, each input goes to OUT/<name> (default outputs/<name>), a "
                        "failing input is reported and skipped, OUT/batch.json lists every item")
    g.add_argument("--low-vram", action="store_true",
                   help="keep the models on the CPU and move each to the GPU only for its stage; sequential CFG "
                        "(same result, less GPU memory, slower)")
    g.add_argument("--cfg-batched", action=argparse.BooleanOptionalAction, default=None,
                   help="evaluate the guided and unguided passes in one batched call (same result within float "
                        "tolerance; faster on a GPU, more memory per call; default: the preset's)")
    g.add_argument("--kv-cache", action=argparse.BooleanOptionalAction, default=None,
                   help="reuse the condition's cross-attention keys/values across sampler steps (exact; "
                        "default: the preset's)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the dense structure-flow trunk (CUDA graphs on a GPU; the first call "
                        "compiles; same result within float tolerance). Where compiling is unavailable (no C++ "
                        "compiler / triton) a note says so and it runs eagerly")
    g.add_argument("--time-chunk", type=_int_at_least("--time-chunk", 2), metavar="N",
                   help="long clips: run the structured-latent flow and the 4D decoder on overlapping chunks of N "
                        "frames (even), blended at the borders (less memory; frames see N frames of context)")
    g.add_argument("--time-overlap", type=_int_at_least("--time-overlap", 0), default=0, metavar="K",
                   help="frames shared by neighbouring chunks (even, < --time-chunk; default 0)")

    g = p.add_argument_group("renders")
    g.add_argument("--render", type=_render_list, default=None, metavar="LIST",
                   help="comma list of novel,turntable,grid,compare, or all / none (default all)")
    g.add_argument("--resolution", type=_int_at_least("--resolution", 1), metavar="PX",
                   help=f"render size (default {CPU_RESOLUTION} on CPU, {CUDA_RESOLUTION} on CUDA; even)")
    g.add_argument("--yaw", type=float, default=30.0, metavar="DEG", help="novel-view yaw in degrees (default 30)")
    g.add_argument("--pitch", type=float, default=15.0, metavar="DEG", help="novel-view pitch in degrees (default 15)")
    g.add_argument("--background", default="white", choices=["white", "black"], help="render background")

    g = p.add_argument_group("exports")
    g.add_argument("--export", type=_export_list, default=[], metavar="LIST",
                   help="also write other formats: comma list of glb (animated mesh), obj, ply-mesh (mesh per "
                        "frame), splat (.splat per frame), or all / none (default none; see README 'Exports')")
    g.add_argument("--mesh-quality", default="normal", choices=["fast", "normal"],
                   help="meshing effort for glb/obj/ply-mesh (default normal; fast is ~3x cheaper)")

    g = p.add_argument_group("messages")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--quiet", action="store_true", help="print only errors")
    g.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _version() -> str:
    from . import __version__

    return __version__


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class _Log:
    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(f"[ss4d] {msg}", flush=True)


def _check_flags(args) -> None:
    import math

    import torch

    from .errors import InputError

    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda, but no CUDA device is available", "use --device cpu (or auto)")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    else:
        from .threads import default_threads

        torch.set_num_threads(default_threads())
    if args.fp8:
        from .fp8 import check_fp8

        check_fp8(torch.device(args.device))
        if args.dtype not in ("auto", "bf16"):
            raise InputError(f"--fp8 runs with bf16 torsos, not --dtype {args.dtype}", "use --dtype bf16 or auto")
        if args.low_vram:
            raise InputError("--fp8 and --low-vram cannot be combined (the FP8 weights stay on the GPU)",
                             "leave one of them out")
        args.dtype = "bf16"
    if args.dtype == "fp16" and args.device == "cpu":
        raise InputError("--dtype fp16 needs a GPU (half precision is not supported well on CPU)",
                         "use --dtype fp32 or bf16 with --device cpu")
    if args.resolution is None:
        args.resolution = CUDA_RESOLUTION if args.device == "cuda" else CPU_RESOLUTION
    if args.resolution % 2 or not MIN_RESOLUTION <= args.resolution <= MAX_RESOLUTION:
        raise InputError(f"--resolution must be an even number of pixels between {MIN_RESOLUTION} and "
                         f"{MAX_RESOLUTION}, got {args.resolution}",
                         "e.g. --resolution 256")
    if not (math.isfinite(args.yaw) and math.isfinite(args.pitch)) or abs(args.pitch) >= 90:
        raise InputError(f"--pitch must be between -90 and 90 degrees and --yaw finite, got yaw {args.yaw:g}, "
                         f"pitch {args.pitch:g}", "e.g. --yaw 30 --pitch 15")
    if args.render is None:
        from .render import RENDER_KINDS

        args.render = list(RENDER_KINDS)
    if args.mask_dir is not None and not os.path.isdir(args.mask_dir):
        raise InputError(f"--mask-dir {args.mask_dir} is not a folder", "give a folder with one mask image per frame")
    if args.matting == "mask-dir" and args.mask_dir is None:
        raise InputError("--matting mask-dir needs --mask-dir DIR", "pass the folder holding one mask per frame")


def _model_path(args, must_exist: bool = True) -> str:
    from .pipeline import missing_model_error

    path, how = resolve_model(args.model)
    if must_exist and not os.path.exists(path):
        raise missing_model_error(path, how, " (or leave --model out to use the small model shipped in "
                                             "checkpoints/ss4d-small)")
    return path


def sampler_settings(args):
    """The preset with the explicit sampling / speed flags over it (:func:`ss4d.presets.resolve_preset`);
    the default preset without flags gives no extra parameters (the faithful path)."""
    return resolve_preset(args.preset, steps_ss=args.steps_ss, steps_slat=args.steps_slat, solver=args.solver,
                          cfg_batched=args.cfg_batched, kv_cache=args.kv_cache)


class _PipelineLoader:
    """Loads the pipeline on first use (after the first input was read, as a single run always did)
    and hands the same one to every later item of a batch."""

    def __init__(self, args, log: _Log):
        self.args, self.log = args, log
        self.pipe = None
        self.seconds = 0.0

    def __call__(self):
        import torch

        from .pipeline import Pipeline

        if self.pipe is not None:
            return self.pipe
        args, log = self.args, self.log
        t0 = time.perf_counter()
        model_path = _model_path(args)
        _, how = resolve_model(args.model)
        pipe = Pipeline.from_pretrained(model_path, device=args.device, dtype=args.dtype, image_cond_model=args.dinov2)
        if args.low_vram:
            pipe.enable_low_vram()
        if args.fp8:
            counts = pipe.enable_fp8()
            log(f"--fp8: {', '.join(f'{n} linear layers of {k}' for k, n in counts.items())} in float8")
        if args.compile:
            import warnings

            with warnings.catch_warnings():   # the status is logged below instead
                warnings.simplefilter("ignore", RuntimeWarning)
                for key, status in pipe.enable_compile().items():
                    log(f"--compile: {key} {status.describe()}")
        self.seconds = time.perf_counter() - t0
        if pipe.random_weights and args.threads is None:
            from .threads import TINY_MODEL_THREADS

            torch.set_num_threads(TINY_MODEL_THREADS)
        if pipe.random_weights:
            log("WARNING: this model folder has RANDOM weights (a tiny test pipeline): the output is an abstract "
                "shape, not a reconstruction of your video")
        dtype_name = str(pipe.dtype).replace("torch.", "")
        threads = f", {_plural(torch.get_num_threads(), 'CPU thread')}" if args.device == "cpu" else ""
        log(f"model {model_path} ({how}) on {args.device} ({dtype_name}{threads})")
        self.pipe = pipe
        return pipe

    def take_seconds(self) -> float:
        """The load time, reported once (by the first item)."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def _generate(args, log: _Log) -> int:
    _check_flags(args)
    loader = _PipelineLoader(args, log)
    if args.batch:
        return _generate_batch(args, loader, log)
    out_path = args.output or os.path.join("outputs", Path(os.path.normpath(args.video)).stem or "result")
    return _generate_one(args, args.video, out_path, loader, log)


def _is_batch_summary(path: str) -> bool:
    """``path`` is a batch.json that ss4d-generate wrote."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("producer") == PROG


def _generate_batch(args, loader: _PipelineLoader, log: _Log) -> int:
    from trellis_ext.atomic import atomic_file

    from .batch import batch_items, run_batch
    from .errors import InputError

    out_root = args.output or "outputs"
    src, root = Path(args.video).resolve(), Path(out_root).resolve()
    if src.is_dir() and (root == src or src in root.parents):
        raise InputError(f"-o {out_root} is inside the batch folder {args.video}",
                         "write the outputs elsewhere, e.g. -o outputs/")
    summary_path = os.path.join(out_root, BATCH_JSON)
    if os.path.lexists(summary_path) and not (args.overwrite and _is_batch_summary(summary_path)):
        raise InputError(f"{summary_path} already exists", "pass --overwrite to replace a previous batch's summary "
                         "(only an ss4d batch.json is replaced), or choose another -o")
    items = batch_items(args.video)
    log(f"batch of {_plural(len(items), 'input')} from {args.video} -> {out_root}/<name>")
    summary = run_batch(items, out_root, lambda item, out: _generate_one(args, item, out, loader, log), log)
    os.makedirs(out_root, exist_ok=True)
    with atomic_file(summary_path, "w") as f:
        json.dump({"producer": PROG, **summary.to_json()}, f, indent=2)
    log(f"batch: {summary.done} done, {summary.failed} failed of {len(items)} in {summary.seconds:.1f} s "
        f"({summary.items_per_hour:.1f} items/hour); {summary_path}")
    if summary.failed:
        print(f"{PROG}: error: {summary.failed} of {len(items)} batch items failed (see {BATCH_JSON})", file=sys.stderr)
        return EXIT_INTERNAL
    return EXIT_OK


def _generate_one(args, video: str, out_path: str, loader: _PipelineLoader, log: _Log) -> int:
    """One input -> one output folder (the whole single-input run)."""
    import torch
    from PIL import Image

    from . import export
    from .io import FrameSelection, OutputFolder, check_output_dir, read_frames
    from .matting import matte_frames
    from .preprocess import preprocess_frames
    from .render import RenderSettings, render_all

    t_start = time.perf_counter()
    timings = {}
    # bars redraw with carriage returns: only on a terminal, never into a log file
    progress = not args.no_progress and not args.quiet and sys.stderr.isatty()
    protected = [("the input", video), ("the model folder", _model_path(args, must_exist=False)),
                 ("--mask-dir", args.mask_dir), ("--dinov2", args.dinov2)]
    check_output_dir(out_path, args.overwrite, protected)

    t0 = time.perf_counter()
    clip = read_frames(video, FrameSelection(start=args.start, stride=args.stride, fps=args.fps,
                                                  num_frames=args.frames))
    timings["read"] = time.perf_counter() - t0
    model_path = _model_path(args)
    log(f"read {len(clip)} frames of {clip.source} ({clip.size[0]}x{clip.size[1]}, source frames "
        f"{clip.indices[0]}..{clip.indices[-1]}, {clip.fps:g} fps)")
    for note in clip.notes:
        log(f"note: {note}")

    t0 = time.perf_counter()
    rgba, matting = matte_frames(clip.frames, args.matting, mask_dir=args.mask_dir, source_indices=clip.indices,
                                 frame_names=clip.names)
    timings["matting"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    images, crop = preprocess_frames(rgba)
    timings["preprocess"] = time.perf_counter() - t0
    log(f"object cut out with '{matting}' matting; crop box {crop}")

    pipe = loader()
    timings["load"] = loader.take_seconds()
    dtype_name = str(pipe.dtype).replace("torch.", "")

    sampling = sampler_settings(args)
    speed = sampling.sampler_params
    result = pipe.run(images, seed=args.seed, ss_steps=sampling.steps_ss, slat_steps=sampling.steps_slat,
                      ss_cfg=args.cfg_ss, slat_cfg=args.cfg_slat, preprocess_image=False,
                      sparse_structure_sampler_params=speed, slat_sampler_params=speed, progress=progress,
                      time_chunk=args.time_chunk, time_overlap=args.time_overlap)
    for k in ("condition", "sparse_structure", "slat", "decode"):
        timings[k] = result.timings[k]
    log(f"generated {result.num_frames} frames: {sum(result.voxels_per_frame)} voxels, "
        f"{sum(len(g) for g in result.gaussians)} Gaussians in {result.timings['total']:.1f} s")

    settings = RenderSettings(resolution=args.resolution, yaw=args.yaw, pitch=args.pitch, background=args.background)
    with OutputFolder(out_path, args.overwrite, protected) as tmp:
        t0 = time.perf_counter()
        files = {"gaussians": export.save_gaussians(result.gaussians, tmp / "gaussians"),
                 "coords": export.save_coords(result.coords, tmp / "coords", result.resolution),
                 "input": export.save_images(result.images, tmp / "input")}
        timings["export"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        renders = (render_all(result.gaussians, result.images, args.render, settings, progress=progress)
                   if args.render else {})
        render_info = {}
        fps = {kind: (max(clip.fps, MIN_TURNTABLE_FPS) if kind == "turntable" else clip.fps) for kind in renders}
        if renders:
            (tmp / "renders").mkdir()
        for kind, frames in renders.items():
            export.write_video(frames, tmp / "renders" / f"{kind}.mp4", fps[kind])
            Image.fromarray(frames[0]).save(tmp / "renders" / f"{kind}.png")
            render_info[kind] = {"file": f"renders/{kind}.mp4", "preview": f"renders/{kind}.png",
                                 "frames": len(frames), "fps": fps[kind],
                                 "size": [int(frames[0].shape[1]), int(frames[0].shape[0])]}
        timings["render"] = time.perf_counter() - t0
        rel = {k: [os.path.relpath(p, tmp) for p in v] for k, v in files.items()}
        if args.export:
            t0 = time.perf_counter()
            from .exports import MESH_QUALITY, write_exports

            rel.update(write_exports(result.gaussians, args.export, tmp, clip.fps, MESH_QUALITY[args.mesh_quality],
                                     progress=progress))
            timings["exports"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_start
        export.write_result_json(tmp / "result.json", {
            "input": {"path": os.path.abspath(video), "kind": clip.kind, "size": list(clip.size),
                      "source_fps": clip.source_fps, "fps": clip.fps, "source_frames": clip.indices,
                      "frame_names": clip.names, "matting": matting, "crop_box": list(crop), "notes": clip.notes},
            "selection": {"start": args.start, "stride": args.stride, "fps": args.fps, "frames": args.frames},
            "model": {"path": os.path.abspath(model_path), "random_weights": pipe.random_weights,
                      "device": args.device, "dtype": dtype_name, "cpu_threads": torch.get_num_threads(),
                      "low_vram": args.low_vram,
                      "compile": {k: v.describe() for k, v in pipe.compiled.items()},
                      "fp8_layers": pipe.fp8_layers,
                      "condition_encoder": type(pipe.image_cond_model).__name__},
            "seed": args.seed,
            "preset": args.preset,
            "sampler": result.params,
            "num_frames": result.num_frames,
            "resolution": result.resolution,
            "voxels_per_frame": result.voxels_per_frame,
            "gaussians_per_frame": [len(g) for g in result.gaussians],
            "render_settings": {"resolution": settings.resolution, "yaw_deg": settings.yaw,
                                "pitch_deg": settings.pitch, "radius": settings.radius, "fov_deg": settings.fov,
                                "background": settings.background},
            "renders": render_info,
            "files": rel,
            "timings_s": {k: round(v, 4) for k, v in timings.items()},
            "versions": export.versions(),
            "command": [PROG] + list(args._argv),
        })
    log(f"wrote {out_path} ({_plural(len(files['gaussians']), 'PLY file')}, {_plural(len(render_info), 'video')}) in "
        f"{timings['total']:.1f} s")
    if pipe.random_weights:
        log("reminder: RANDOM weights - the Gaussians are an abstract shape; pass --model with the SS4D weights "
            "for a real result")
    return EXIT_OK


@contextlib.contextmanager
def _sigterm_raises():
    """While generating, SIGTERM raises :class:`_Terminated` (like Ctrl-C raises KeyboardInterrupt)."""
    def handler(signum, frame):
        raise _Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals to the host program
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, already printed)
        return int(e.code or 0)
    args._argv = argv
    log = _Log(args.quiet)
    try:
        with _sigterm_raises():
            return _generate(args, log)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (nothing was written)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _Terminated:
        print(f"{PROG}: terminated by SIGTERM (nothing was written; partial files removed)", file=sys.stderr)
        return EXIT_TERMINATED
    except Exception as e:  # noqa: BLE001  (the one place that turns exceptions into exit codes)
        return report_error(PROG, e, args.debug)


if __name__ == "__main__":
    sys.exit(main())

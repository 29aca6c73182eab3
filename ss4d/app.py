"""``ss4d-app``: a web page for ``ss4d-generate`` (gradio, as TRELLIS's own demo).

Drop a video, an animated GIF or a set of frames on the page (or pick the example clip), choose
frames / stride / steps / seed / model, and get: the input beside the turntable and novel-view
videos, the animated mesh (GLB) and one frame's Gaussians in interactive 3D viewers, and
downloads (zip of the per-frame PLYs, the GLB, zips of the .splat and mesh files, result.json).

How it works: each click runs :func:`ss4d.cli.main` in-process on a fresh folder (the same code,
checks and messages as the command line; gradio follows its tqdm bars, so every stage shows its
progress). A bad input comes back as the CLI's one-line message, shown on the page.

* **One command**: ``ss4d-app`` (serves http://127.0.0.1:7860; ``--host 0.0.0.0`` to share on a network).
* **Queue**: one generation at a time (``--concurrency``), at most ``--max-queue`` waiting visitors.
* **Disk**: everything lives under one temporary folder (``--work-dir``, default a fresh
  ``ss4d-app-*`` under the system temp dir, removed at exit): at most ``--max-runs`` result
  folders are kept (oldest deleted first), a visitor's results are deleted when the page is
  closed, and gradio's own upload cache there is swept every :data:`CACHE_SWEEP_S` seconds.
* **Models**: ``--model PATH`` (default ``$SS4D_MODEL``, ``checkpoints/SS4D`` and the shipped small model
  ``checkpoints/ss4d-small`` when present) and
  the tiny random-weight pipeline (``ss4d.tiny``; written on first use), which runs anywhere in
  seconds but produces an abstract shape.
"""

import argparse
import atexit
import contextlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

__all__ = ["main", "build_parser", "build_app", "serve", "AppConfig", "RunStore", "input_path", "run_generate", "AppError"]

PROG = "ss4d-app"
REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CLIP = REPO / "assets" / "dancing_robot_fg.mp4"
TINY_DIR = REPO / "checkpoints" / "tiny_ss4d"
TINY_LABEL = "tiny random weights (demo: abstract shape)"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860
DEFAULT_MAX_RUNS, DEFAULT_MAX_QUEUE, DEFAULT_CONCURRENCY = 8, 16, 1
#: gradio's upload/result cache: swept every CACHE_SWEEP_S, files older than CACHE_MAX_AGE_S deleted.
CACHE_SWEEP_S, CACHE_MAX_AGE_S = 600, 3600
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
RENDERS = "novel,turntable"
#: Page defaults: the demo's 8 frames spanning 2 s of the example clip.
DEFAULT_FRAMES, DEFAULT_STRIDE, DEFAULT_SEED = 8, 4, 42
MAX_FRAMES, MAX_STRIDE, MAX_STEPS = 32, 16, 50
MIN_RESOLUTION, MAX_RESOLUTION, RESOLUTION_STEP, DEFAULT_RESOLUTION = 64, 512, 64, 256
DEFAULT_EXPORTS = ("glb", "splat")
ERROR_PREFIX = re.compile(r"^ss4d-generate: (internal )?error: ")


class AppError(Exception):
    """A message for the visitor (shown on the page as is)."""


@dataclass
class RunStore:
    """The bounded temp folder: ``root/run-*`` result folders, at most ``max_runs`` kept, and a
    record of which visitor (gradio session) made which, so closing the page deletes them."""

    root: Path
    max_runs: int = DEFAULT_MAX_RUNS
    sessions: Dict[str, List[Path]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new_run(self, session: Optional[str]) -> Path:
        """A fresh, empty folder for one generation (older runs beyond ``max_runs - 1`` are deleted)."""
        with self.lock:
            runs = sorted(self.root.glob("run-*"))   # names start with the creation time in ns
            for old in runs[:max(0, len(runs) - (self.max_runs - 1))]:
                shutil.rmtree(old, ignore_errors=True)
            run = self.root / f"run-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
            run.mkdir(parents=True)
            self.sessions.setdefault(session or "", []).append(run)
            return run

    def end_session(self, session: Optional[str]) -> None:
        """Delete every run of a visitor who left."""
        with self.lock:
            for run in self.sessions.pop(session or "", []):
                shutil.rmtree(run, ignore_errors=True)


@dataclass
class AppConfig:
    models: Dict[str, str]          # label -> model folder
    store: RunStore
    device: str = "auto"
    threads: Optional[int] = None
    mesh_quality: str = "fast"


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def input_path(files: Sequence[str], run: Path) -> str:
    """The uploaded file(s) -> what ``ss4d-generate`` reads: one video / GIF as is; several images
    become a folder of frames ``0.png, 1.png, ...`` in natural order of their names."""
    files = [str(f) for f in (files or [])]
    if not files:
        raise AppError("Upload a video, an animated GIF or several frames first (or click the example).")
    suffixes = [Path(f).suffix.lower() for f in files]
    if len(files) == 1 and suffixes[0] in VIDEO_SUFFIXES:
        return files[0]
    if all(s in IMAGE_SUFFIXES for s in suffixes):
        if len(files) < 2:
            raise AppError("One image is not a video: upload at least 2 frames, or a video / GIF.")
        frames = run / "upload_frames"
        frames.mkdir()
        for i, f in enumerate(sorted(files, key=lambda f: _natural_key(Path(f).name))):
            shutil.copy(f, frames / f"{i}{Path(f).suffix.lower()}")
        return str(frames)
    raise AppError(f"Cannot read {', '.join(Path(f).name for f in files)}: upload one video "
                   f"({', '.join(VIDEO_SUFFIXES)}) or several frames ({', '.join(IMAGE_SUFFIXES)}).")


class _Captured(io.StringIO):
    """The CLI's stdout/stderr. It reports a terminal because the CLI draws its tqdm bars only on one,
    and gradio (``Progress(track_tqdm=True)``) shows exactly those bars as the page's per-stage progress."""

    def isatty(self) -> bool:
        return True


def _zip(folder: Path, files: Sequence[str], name: str) -> str:
    path = folder / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for rel in files:
            z.write(folder / rel, rel)
    return str(path)


def run_generate(config: AppConfig, files, model_label: str, frames: int, stride: int, steps: int, seed: int,
                 resolution: int, exports: Sequence[str], session: Optional[str] = None) -> Dict[str, object]:
    """One generation through ``ss4d.cli.main`` -> paths of everything the page shows.

    Raises :class:`AppError` with the CLI's one-line message when it fails."""
    from . import cli, export
    from .tiny import write_tiny_video_to_4d

    run = config.store.new_run(session)
    video = input_path(files, run)
    if model_label not in config.models:
        raise AppError(f"Unknown model {model_label!r}; choose one of {', '.join(config.models)}.")
    model = config.models[model_label]
    if model_label == TINY_LABEL:
        write_tiny_video_to_4d(model)
    out = run / "result"
    argv = [video, "-o", str(out), "--model", model, "--frames", str(int(frames)), "--stride", str(int(stride)),
            "--seed", str(int(seed)), "--resolution", str(int(resolution)), "--render", RENDERS,
            "--device", config.device, "--mesh-quality", config.mesh_quality]
    if steps:
        argv += ["--steps-ss", str(int(steps)), "--steps-slat", str(int(steps))]
    if exports:
        argv += ["--export", ",".join(exports)]
    if config.threads:
        argv += ["--threads", str(config.threads)]
    messages = _Captured()
    with contextlib.redirect_stdout(messages), contextlib.redirect_stderr(messages):
        code = cli.main(argv)
    if code != cli.EXIT_OK:
        lines = [ln for ln in messages.getvalue().splitlines() if ERROR_PREFIX.match(ln)]
        msg = ERROR_PREFIX.sub("", lines[-1]) if lines else f"generation failed (exit code {code})"
        msg = msg.replace(video, Path(video).name).replace(str(run), "")   # no server paths on the page
        raise AppError(msg[0].upper() + msg[1:])
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    files_ = result["files"]
    input_video = export.write_video([_read_rgb(out / p) for p in files_["input"]], run / "input.mp4",
                                     result["input"]["fps"])
    downloads = [_zip(out, files_["gaussians"], "gaussians_ply.zip")]
    if "glb" in files_:
        downloads.append(str(out / files_["glb"][0]))
    if "splat" in files_:
        downloads.append(_zip(out, files_["splat"], "splat.zip"))
    mesh_files = files_.get("obj", []) + files_.get("ply-mesh", [])
    if mesh_files:
        downloads.append(_zip(out, mesh_files, "mesh.zip"))
    downloads.append(str(out / "result.json"))
    return {"run": str(out), "input_video": input_video,
            "turntable": str(out / result["renders"]["turntable"]["file"]),
            "novel": str(out / result["renders"]["novel"]["file"]),
            "glb": str(out / files_["glb"][0]) if "glb" in files_ else None,
            "gaussians": [str(out / p) for p in files_["gaussians"]],
            "downloads": downloads, "result": result}


def _read_rgb(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _summary(result: Dict[str, object]) -> str:
    r = result["result"]
    text = (f"**Done** in {r['timings_s']['total']:.1f} s: {r['num_frames']} frames, "
            f"{sum(r['gaussians_per_frame'])} Gaussians, model `{Path(r['model']['path']).name}` on "
            f"{r['model']['device']}.")
    if r["model"]["random_weights"]:
        text += " **Random weights**: the result is an abstract shape, not your object."
    return text


def build_app(config: AppConfig):
    """The gradio ``Blocks`` page (not launched)."""
    import gradio as gr

    with gr.Blocks(title="SS4D: video to 4D", delete_cache=(CACHE_SWEEP_S, CACHE_MAX_AGE_S)) as demo:
        gr.Markdown("## SS4D: a video of a moving object → 4D Gaussians, an animated mesh and videos\n"
                    "Upload a short clip of **one object** on a plain or transparent background (a video, an "
                    "animated GIF, or several frames), then **Generate**. Files: per-frame 3D Gaussians (PLY, "
                    ".splat), an animated GLB; see the README's *Exports* table for what opens them.")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Video, GIF or frames", file_count="multiple",
                                 file_types=list(VIDEO_SUFFIXES + IMAGE_SUFFIXES), elem_id="ss4d-upload")
                if EXAMPLE_CLIP.is_file():
                    gr.Examples([[[str(EXAMPLE_CLIP)]]], inputs=[upload], label="Example")
                model = gr.Dropdown(list(config.models), value=next(iter(config.models)), label="Model",
                                    elem_id="ss4d-model")
                with gr.Accordion("Settings", open=True):
                    frames = gr.Slider(2, MAX_FRAMES, value=DEFAULT_FRAMES, step=2, label="Frames (even)",
                                       elem_id="ss4d-frames")
                    stride = gr.Slider(1, MAX_STRIDE, value=DEFAULT_STRIDE, step=1, label="Use every K-th frame",
                                       elem_id="ss4d-stride")
                    steps = gr.Slider(0, MAX_STEPS, value=0, step=1, label="Sampling steps (0: the model's own)",
                                      elem_id="ss4d-steps")
                    seed = gr.Number(DEFAULT_SEED, precision=0, minimum=0, label="Seed", elem_id="ss4d-seed")
                    resolution = gr.Slider(MIN_RESOLUTION, MAX_RESOLUTION, value=DEFAULT_RESOLUTION,
                                           step=RESOLUTION_STEP, label="Video size (pixels)", elem_id="ss4d-resolution")
                    exports = gr.CheckboxGroup(["glb", "splat", "obj", "ply-mesh"], value=list(DEFAULT_EXPORTS),
                                               label="Exports", elem_id="ss4d-exports")
                button = gr.Button("Generate", variant="primary", elem_id="ss4d-generate")
            with gr.Column(scale=2):
                status = gr.Markdown("", elem_id="ss4d-status")
                with gr.Row():
                    input_video = gr.Video(label="Input (as the model saw it)", interactive=False, loop=True,
                                           autoplay=True, elem_id="ss4d-input-video")
                    turntable = gr.Video(label="Turntable", interactive=False, loop=True, autoplay=True,
                                         elem_id="ss4d-turntable")
                    novel = gr.Video(label="Novel view", interactive=False, loop=True, autoplay=True,
                                     elem_id="ss4d-novel")
                with gr.Row():
                    mesh_view = gr.Model3D(label="Animated mesh (GLB)", elem_id="ss4d-mesh-view")
                    with gr.Column():
                        splat_view = gr.Model3D(label="Gaussians of one frame", elem_id="ss4d-splat-view")
                        frame = gr.Slider(0, MAX_FRAMES - 1, value=0, step=1, label="Frame", elem_id="ss4d-frame")
                downloads = gr.File(label="Downloads", file_count="multiple", interactive=False,
                                    elem_id="ss4d-downloads")

        def generate(files, model_label, n_frames, k_stride, n_steps, n_seed, res, kinds,
                     request: gr.Request, progress=gr.Progress(track_tqdm=True)):
            progress(0, desc="Reading the input")
            try:
                out = run_generate(config, files, model_label, n_frames, k_stride, n_steps, n_seed, res, kinds,
                                   session=getattr(request, "session_hash", None))
            except AppError as e:
                raise gr.Error(str(e), print_exception=False) from None
            except Exception as e:  # noqa: BLE001  (a page shows a message, never a traceback)
                raise gr.Error(f"Internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]}",
                               print_exception=True) from None
            return (out, _summary(out), out["input_video"], out["turntable"], out["novel"], out["glb"],
                    out["gaussians"][0], gr.Slider(maximum=len(out["gaussians"]) - 1, value=0), out["downloads"])

        def show_frame(out, t):
            if not out:
                return None
            return out["gaussians"][min(int(t), len(out["gaussians"]) - 1)]

        button.click(generate, [upload, model, frames, stride, steps, seed, resolution, exports],
                     [state, status, input_video, turntable, novel, mesh_view, splat_view, frame, downloads],
                     concurrency_id="generate")
        frame.release(show_frame, [state, frame], [splat_view], queue=False)

        def leave(request: gr.Request):
            config.store.end_session(getattr(request, "session_hash", None))

        demo.unload(leave)
    return demo


def serve(config: AppConfig, host: str, port: int, max_queue: int = DEFAULT_MAX_QUEUE,
          concurrency: int = DEFAULT_CONCURRENCY, block: bool = True):
    """Build the page, queue it (``concurrency`` generations at once, ``max_queue`` waiting) and serve
    it; ``block=False`` returns the running ``Blocks`` (``.close()`` stops it)."""
    demo = build_app(config)
    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency)
    demo.launch(server_name=host, server_port=port, show_error=False, ssr_mode=False, quiet=True,
                allowed_paths=[str(config.store.root)], prevent_thread_lock=not block)
    return demo


def _models(extra: Optional[str], tiny_only: bool = False) -> Dict[str, str]:
    from .default_model import MODEL_ENV, OFFICIAL_DIR, SMALL_MODEL_DIR

    models: Dict[str, str] = {}
    if tiny_only:
        return {TINY_LABEL: str(TINY_DIR)}
    for path in (extra, os.environ.get(MODEL_ENV), str(REPO / OFFICIAL_DIR), str(SMALL_MODEL_DIR)):
        if path and os.path.isdir(path) and os.path.abspath(path) not in map(os.path.abspath, models.values()):
            models[f"{Path(path).name} ({path})"] = path
    models[TINY_LABEL] = str(TINY_DIR)
    return models


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="A web page for ss4d-generate (video -> 4D).")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to serve on (default {DEFAULT_HOST}: this machine "
                   "only; 0.0.0.0 shares it on your network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--model", metavar="PATH", help="an SS4D model folder (default $SS4D_MODEL, checkpoints/SS4D and "
                   "checkpoints/ss4d-small when present; the tiny random-weight pipeline is always offered)")
    p.add_argument("--tiny", action="store_true", help="offer only the tiny random-weight pipeline (a try-out "
                   "without weights; what the browser test uses)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--mesh-quality", choices=["fast", "normal"], help="GLB/mesh effort (default: normal on CUDA, "
                   "fast on CPU)")
    p.add_argument("--work-dir", metavar="DIR", help="the app's temporary folder (default: a fresh one, deleted at exit)")
    p.add_argument("--max-runs", type=int, default=DEFAULT_MAX_RUNS, help=f"results kept on disk (default "
                   f"{DEFAULT_MAX_RUNS}; oldest deleted first)")
    p.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE, help="visitors allowed to wait "
                   f"(default {DEFAULT_MAX_QUEUE})")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="generations at once (default 1)")
    return p


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.model and not os.path.isdir(args.model):
        print(f"{PROG}: error: --model {args.model} is not a folder", file=sys.stderr)
        return 2
    if min(args.max_runs, args.max_queue, args.concurrency) < 1:
        print(f"{PROG}: error: --max-runs, --max-queue and --concurrency must be >= 1", file=sys.stderr)
        return 2
    if args.work_dir:
        root = Path(args.work_dir)
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="ss4d-app-"))
        atexit.register(shutil.rmtree, root, True)
    # gradio's uploads and served copies live in the same bounded folder (read when gradio imports)
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    config = AppConfig(models=_models(args.model, args.tiny), store=RunStore(root, args.max_runs), device=device,
                       threads=args.threads, mesh_quality=args.mesh_quality or ("normal" if device == "cuda" else "fast"))
    port = args.port or _free_port(args.host)
    print(f"[{PROG}] serving on http://{args.host}:{port} (temporary files in {root}; Ctrl+C to stop)", flush=True)
    try:
        serve(config, args.host, port, args.max_queue, args.concurrency)
    except OSError as e:
        print(f"{PROG}: error: cannot serve on {args.host}:{port}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

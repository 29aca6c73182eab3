"""Multi-view + conditioning renders of a mesh sequence, with Blender (of record) or PyTorch.

Output of :func:`render_clip` (``T`` frames, ``V`` views, one camera set shared by all frames)::

    renders/<t:03d>/<v:03d>.png      RGBA, straight alpha, sRGB
    renders/<t:03d>/depth.npz        depth float16 [V, H, W], planar camera z, inf = background
    renders/<t:03d>/transforms.json  Blender c2w per view, camera_angle_x, time, normalisation
    cond/<t:03d>.png                 conditioning video frame t (one fixed camera)
    cond/transforms.json             that camera, repeated per frame
    cond/video.mp4                   preview (RGBA over white), optional

Renderers: ``blender`` runs :mod:`ss4d.data.render_blender` in the Blender environment (Cycles;
``.venv-blender`` by default, or ``$SS4D_BLENDER_PYTHON``); ``torch`` uses
:class:`ss4d.data.rasterize.MeshRenderer` (same cameras and geometry, Lambert shading).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import zlib
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .cameras import (DEFAULT_FOV_DEG, DEFAULT_RADIUS, TRANSFORMS_FILE, BlenderCamera, conditioning_camera, orbit_views,
                      write_transforms)
from .child_process import run_tied
from .layout import frame_dir_name, read_rgba_files, view_file
from .mesh import MeshSequence

log = logging.getLogger(__name__)

RENDERERS = ("blender", "torch")
BLENDER_ENV_VAR = "SS4D_BLENDER_PYTHON"
BLENDER_VENV = ".venv-blender"
BLENDER_SCRIPT = Path(__file__).with_name("render_blender.py")
DEPTH_FILE = "depth.npz"
COND_DIR = "cond"
COND_VIDEO = "video.mp4"
COND_VIDEO_BACKGROUND = 255
COND_VIDEO_FPS = 8.0
BLENDER_PROBE_TIMEOUT_S = 120


@dataclass
class RenderSettings:
    """Rendering options (defaults follow TRELLIS: 150 views, 512^2, radius 2, fov 40 deg)."""

    num_views: int = 150
    resolution: int = 512
    radius: float = DEFAULT_RADIUS
    fov_deg: float = DEFAULT_FOV_DEG
    cond_camera: str = "front"
    cond_resolution: int = 512
    cond_fov_deg: float = DEFAULT_FOV_DEG
    cond_video: bool = True
    samples: int = 64  # Cycles samples per pixel
    denoise: bool = False
    device: str = "auto"  # blender: auto | cpu | gpu
    threads: int = 0  # blender: 0 = all cores
    ssaa: int = 2  # torch renderer: supersampling per axis
    torch_device: str = "cpu"  # torch renderer: device (the builder passes --device)
    seed: int = 0  # camera offsets; per clip it is mixed with the clip id
    timeout_s: float = 0  # blender subprocess timeout, 0 = none


def clip_seed(clip_id: str, seed: int) -> int:
    """Deterministic per-clip seed (camera offsets differ between clips, as in TRELLIS)."""
    return (zlib.crc32(clip_id.encode()) ^ (seed * 0x9E3779B1)) & 0x7FFFFFFF


def clip_cameras(clip_id: str, settings: RenderSettings) -> tuple[list[BlenderCamera], BlenderCamera]:
    """(the V orbit views, the conditioning camera) of a clip."""
    seed = clip_seed(clip_id, settings.seed)
    views = orbit_views(settings.num_views, settings.resolution, settings.radius, settings.fov_deg, seed=seed)
    cond = conditioning_camera(settings.cond_camera, settings.cond_resolution, settings.radius,
                               settings.cond_fov_deg, seed=seed + 1)
    return views, cond


# ------------------------------------------------------------------------------------ blender discovery
def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def find_blender_python() -> str | None:
    """The Blender environment's interpreter: ``$SS4D_BLENDER_PYTHON`` or ``<repo>/.venv-blender``,
    if it exists and can import bpy; else None."""
    cand = os.environ.get(BLENDER_ENV_VAR) or str(repo_root() / BLENDER_VENV / "bin" / "python")
    return cand if _can_import_bpy(cand) else None


@lru_cache(maxsize=None)
def _can_import_bpy(python: str) -> bool:
    if not Path(python).exists():
        return False
    try:
        res = subprocess.run([python, "-c", "import bpy"], capture_output=True, timeout=BLENDER_PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


def resolve_renderer(name: str) -> str:
    """``auto`` -> ``blender`` when the Blender environment works, else ``torch`` (logged)."""
    if name == "auto":
        if find_blender_python():
            return "blender"
        log.warning("Blender environment not found (make setup-blender or $%s); using the torch renderer",
                    BLENDER_ENV_VAR)
        return "torch"
    if name not in RENDERERS:
        raise ValueError(f"renderer must be auto, blender or torch, got {name!r}")
    if name == "blender" and not find_blender_python():
        raise RuntimeError(f"--renderer blender needs the Blender environment: run `make setup-blender` "
                           f"or set ${BLENDER_ENV_VAR} to a Python with bpy==5.0.1")
    return name


def run_blender_job(job: dict, work_dir: Path, timeout_s: float = 0) -> None:
    """Run :mod:`ss4d.data.render_blender` on ``job``; raises RuntimeError with its last output lines."""
    python = find_blender_python()
    if python is None:
        raise RuntimeError("Blender environment not available (make setup-blender)")
    work_dir.mkdir(parents=True, exist_ok=True)
    job = dict(job, work_dir=str(work_dir))
    job_path = work_dir / f"job_{job['mode']}.json"
    job_path.write_text(json.dumps(job))
    try:  # own process group, killed with the builder (also when the builder is SIGKILLed)
        res = run_tied([python, str(BLENDER_SCRIPT), str(job_path)], timeout_s=timeout_s or None)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"Blender {job['mode']} job timed out after {timeout_s:g}s") from None
    if res.returncode != 0:
        tail = " | ".join((res.stdout + res.stderr).strip().splitlines()[-6:])
        raise RuntimeError(f"Blender {job['mode']} job failed (exit {res.returncode}): {tail}")


def _camera_json(cam: BlenderCamera, file: str | None = None) -> dict:
    d = {"c2w": np.asarray(cam.c2w_blender).tolist(), "fov_x": cam.fov_x, "width": cam.width, "height": cam.height}
    if file:
        d["file"] = file
    return d


# ------------------------------------------------------------------------------------ main entry
def render_clip(seq: MeshSequence, mesh_dir: Path | None, renders_dir: Path | None, cond_dir: Path | None,
                clip_id: str, settings: RenderSettings, renderer: str = "torch",
                frames: list[int] | None = None) -> dict:
    """Render all (or ``frames``) frames of a normalised clip into ``renders_dir`` / ``cond_dir``.

    ``mesh_dir`` (the saved mesh sequence) is required by the Blender renderer. Either output dir
    may be None to skip that part. Returns a small record (renderer, views, resolution...).
    """
    frames = list(range(seq.num_frames)) if frames is None else frames
    for d in (renders_dir, cond_dir):
        if d is not None:
            d.mkdir(parents=True, exist_ok=True)
    views, cond_cam = clip_cameras(clip_id, settings)
    if renderer == "blender":
        if mesh_dir is None:
            raise ValueError("the Blender renderer needs the saved mesh directory")
        _render_blender(mesh_dir, renders_dir, cond_dir, views, cond_cam, frames, settings)
    elif renderer == "torch":
        _render_torch(seq, renders_dir, cond_dir, views, cond_cam, frames, settings)
    else:
        raise ValueError(f"unknown renderer {renderer!r}")
    extra = {"normalization": seq.normalization, "aabb": [-0.5, -0.5, -0.5, 0.5, 0.5, 0.5], "renderer": renderer}
    if renders_dir is not None:
        for t in frames:
            write_transforms(renders_dir / frame_dir_name(t) / TRANSFORMS_FILE, views,
                             [view_file(v) for v in range(len(views))], depth_file=DEPTH_FILE,
                             extra=dict(extra, frame_index=t, time=float(seq.times[t])))
    if cond_dir is not None:
        write_transforms(cond_dir / TRANSFORMS_FILE, [cond_cam] * len(frames), [view_file(t) for t in frames],
                         extra=dict(extra, times=[float(seq.times[t]) for t in frames], mode=settings.cond_camera))
        if settings.cond_video:
            write_preview_video(cond_dir, frames)
    return {"renderer": renderer, "num_views": len(views), "resolution": settings.resolution,
            "settings": asdict(settings)}


def _render_torch(seq, renders_dir, cond_dir, views, cond_cam, frames, settings):
    from PIL import Image

    from .rasterize import MeshRenderer

    r = MeshRenderer(seq.faces, seq.materials, seq.face_material, seq.uv, seq.colors, ssaa=settings.ssaa,
                     device=settings.torch_device)
    for t in frames:
        if renders_dir is not None:
            out = renders_dir / frame_dir_name(t)
            out.mkdir(parents=True, exist_ok=True)
            depths = []
            for v, cam in enumerate(views):
                rgba, depth = r.render(seq.vertices[t], cam)
                Image.fromarray(rgba, "RGBA").save(out / view_file(v))
                depths.append(depth)
            np.savez_compressed(out / DEPTH_FILE, depth=np.stack(depths).astype(np.float16))
        if cond_dir is not None:
            cond_dir.mkdir(parents=True, exist_ok=True)
            rgba, _ = r.render(seq.vertices[t], cond_cam)
            Image.fromarray(rgba, "RGBA").save(cond_dir / view_file(t))


def _render_blender(mesh_dir, renders_dir, cond_dir, views, cond_cam, frames, settings):
    job_frames = []
    for t in frames:
        fr = {"index": t, "views": [], "cond": None}
        if renders_dir is not None:
            fr["out_dir"] = str(renders_dir / frame_dir_name(t))
            fr["views"] = [_camera_json(c, view_file(v)) for v, c in enumerate(views)]
        if cond_dir is not None:
            fr["cond"] = dict(_camera_json(cond_cam, view_file(t)), out_dir=str(cond_dir))
        job_frames.append(fr)
    job = {"mode": "render", "mesh_dir": str(mesh_dir), "frames": job_frames, "samples": settings.samples,
           "denoise": settings.denoise, "device": settings.device, "threads": settings.threads}
    base = renders_dir if renders_dir is not None else cond_dir
    with tempfile.TemporaryDirectory(prefix="blender.tmp-", dir=base.parent) as work:  # *.tmp-* = stale if killed
        run_blender_job(job, Path(work), settings.timeout_s)
    for t in frames:  # verify outputs
        if renders_dir is not None:
            d = renders_dir / frame_dir_name(t)
            missing = [view_file(v) for v in range(len(views)) if not (d / view_file(v)).is_file()]
            if missing or not (d / DEPTH_FILE).is_file():
                raise RuntimeError(f"Blender did not write frame {t}: missing {missing[:3] or DEPTH_FILE}")
        if cond_dir is not None and not (cond_dir / view_file(t)).is_file():
            raise RuntimeError(f"Blender did not write conditioning frame {t}")


def write_preview_video(cond_dir: Path, frames: list[int], fps: float = COND_VIDEO_FPS) -> None:
    """``cond/video.mp4`` (RGBA composited over white) for eyeballing; skipped if ffmpeg fails."""
    from PIL import Image

    from ss4d.export import write_video

    imgs = []
    for t in frames:
        with Image.open(cond_dir / view_file(t)) as im:
            a = np.asarray(im.convert("RGBA")).astype(np.float32)
        alpha = a[..., 3:4] / 255.0
        rgb = a[..., :3] * alpha + COND_VIDEO_BACKGROUND * (1 - alpha)
        h, w = rgb.shape[:2]
        imgs.append(rgb[: h // 2 * 2, : w // 2 * 2].astype(np.uint8))  # yuv420p needs even sizes
    try:
        write_video(imgs, cond_dir / COND_VIDEO, fps)
    except Exception as exc:  # missing ffmpeg backend etc.; the PNGs are the data of record
        log.info("preview video skipped: %s", exc)


def load_frame_renders(frame_dir: Path) -> tuple[np.ndarray, np.ndarray, list[BlenderCamera]]:
    """(RGBA uint8 [V, H, W, 4], depth float32 [V, H, W], cameras) of one rendered frame."""
    from .cameras import read_transforms

    cams, files, data = read_transforms(frame_dir / TRANSFORMS_FILE)
    rgba = read_rgba_files(frame_dir, files)
    with np.load(frame_dir / data.get("depth_file", DEPTH_FILE)) as z:
        depth = z["depth"].astype(np.float32)
    for cam in cams:  # older files may lack w/h
        cam.width, cam.height = rgba.shape[2], rgba.shape[1]
    return rgba, depth, cams

"""Writing a 4D result to disk (used by the CLI; callable from Python).

Layout of an output folder (every name is fixed, frame numbers are zero-padded to 3 digits)::

    result.json                 settings, seed, versions, timings, file list (see ``write_result_json``)
    gaussians/frame_000.ply     per-frame 3D Gaussians, standard 3DGS PLY (x y z nx ny nz f_dc_0..2
                                opacity scale_0..2 rot_0..3; TRELLIS's y-up rotation, as ``Gaussian.save_ply``)
    coords/frame_000.npz        per-frame voxels: ``coords`` [N, 3] int32 (x, y, z), ``resolution``, ``frame``
    input/frame_000.png         the preprocessed 518² frames the model was conditioned on
    renders/<kind>.mp4          novel / turntable / grid / compare videos (H.264, yuv420p)
    renders/<kind>.png          the first frame of each video

Videos are written with the ffmpeg binary of the ``imageio-ffmpeg`` wheel.
"""
from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from trellis_ext.representations import save_ply

__all__ = ["save_gaussians", "save_coords", "save_images", "write_video", "write_result_json", "versions",
           "frame_name", "load_coords", "json_default"]

VIDEO_QUALITY = 7  # imageio-ffmpeg's 0-10 scale


def frame_name(t: int, ext: str) -> str:
    return f"frame_{t:03d}.{ext}"


def save_gaussians(gaussians: Sequence[Any], folder: Path) -> List[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, g in enumerate(gaussians):
        p = folder / frame_name(t, "ply")
        save_ply(g, p)
        paths.append(str(p))
    return paths


def save_coords(coords: Sequence[Any], folder: Path, resolution: int) -> List[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, c in enumerate(coords):
        p = folder / frame_name(t, "npz")
        arr = c.cpu().numpy() if hasattr(c, "cpu") else np.asarray(c)
        np.savez_compressed(p, coords=arr.astype(np.int32), resolution=np.int32(resolution), frame=np.int32(t))
        paths.append(str(p))
    return paths


def load_coords(path) -> np.ndarray:
    """[N, 3] int32 voxel coords of one ``coords/frame_XXX.npz``."""
    with np.load(path) as z:
        return z["coords"]


def save_images(images: Sequence[Any], folder: Path) -> List[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, im in enumerate(images):
        p = folder / frame_name(t, "png")
        (im if hasattr(im, "save") else Image.fromarray(np.asarray(im))).save(p)
        paths.append(str(p))
    return paths


def write_video(frames: Sequence[np.ndarray], path: Path, fps: float) -> str:
    """H.264 mp4 (yuv420p) of uint8 [H, W, 3] frames; H and W must be even."""
    import imageio_ffmpeg

    h, w = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=float(fps), codec="libx264", pix_fmt_out="yuv420p",
                                         quality=VIDEO_QUALITY, macro_block_size=2, ffmpeg_log_level="error")
    writer.send(None)
    try:
        for f in frames:
            writer.send(np.ascontiguousarray(f[..., :3], dtype=np.uint8))
    finally:
        writer.close()
    return str(path)


def versions() -> Dict[str, str]:
    import torch

    out = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
           "numpy": np.__version__}
    for mod in ("ss4d", "imageio_ffmpeg", "PIL", "transformers", "gsplat"):
        try:
            m = __import__(mod)
            out[mod] = str(getattr(m, "__version__", "unknown"))
        except Exception:
            continue
    try:
        from importlib.metadata import version

        out["ss4d"] = version("ss4d")
    except Exception:
        pass
    return out


def json_default(o):
    """``json.dump(default=...)`` for result files: numpy scalars as numbers, paths and the rest as strings."""
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    return str(o)


def write_result_json(path: Path, data: Dict[str, Any]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=json_default)
        f.write("\n")
    return str(path)

"""Videos of a 4D result with ``trellis_ext``'s rasteriser (gsplat on CUDA, the PyTorch reference on CPU).

Cameras follow TRELLIS (Z-up object in [-0.5, 0.5]³, orbit radius 2, 40° field of view, see
:mod:`trellis_ext.renderers.camera`); angles here are in **degrees**. Every function returns a list of
uint8 ``[H, W, 3]`` frames.

* ``novel``: one fixed camera (``yaw``, ``pitch``) while time runs.
* ``turntable`` ("bullet-time"): the camera orbits 360° while time runs; the clip loops until the
  orbit has at least :data:`MIN_TURNTABLE_FRAMES` frames.
* ``grid``: 2×2 tiles per frame, the official demo's four yaws (30°, 120°, 210°, 300°) at a fixed
  pitch of 15° (the official script draws each pitch from U(0°, 30°); 15° is its mean).
* ``compare``: the preprocessed input frame beside the ``novel`` view.

CPU cost: about 0.25 s per 256² frame for the tiny pipeline's ~20k Gaussians, ~2-3 s per 512² frame
of 50k Gaussians; pick ``resolution`` accordingly (the CLI defaults to 256 on CPU, 512 on CUDA).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from trellis_ext.renderers import orbit_camera, render_gaussians
from trellis_ext.renderers.camera import DEFAULT_FOV_DEG, DEFAULT_RADIUS

__all__ = ["RenderSettings", "RENDER_KINDS", "render_view", "render_novel", "render_turntable", "render_grid",
           "render_compare", "render_all", "GRID_YAWS_DEG", "GRID_PITCH_DEG", "MIN_TURNTABLE_FRAMES"]

RENDER_KINDS = ("novel", "turntable", "grid", "compare")
GRID_YAWS_DEG = (30.0, 120.0, 210.0, 300.0)   # official test.py: π/6 + k·π/2
GRID_PITCH_DEG = 15.0
MIN_TURNTABLE_FRAMES = 24
BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


@dataclass
class RenderSettings:
    """Camera and image settings shared by every render."""

    resolution: int = 256
    yaw: float = 30.0          # degrees, novel / compare view
    pitch: float = 15.0        # degrees
    radius: float = DEFAULT_RADIUS
    fov: float = DEFAULT_FOV_DEG   # degrees
    background: str = "white"
    turntable_frames: Optional[int] = None   # default: T looped to >= MIN_TURNTABLE_FRAMES

    @property
    def bg_color(self) -> Tuple[float, float, float]:
        return BACKGROUNDS[self.background]


def render_view(gaussians, yaw_deg: float, pitch_deg: float, settings: RenderSettings) -> np.ndarray:
    """One uint8 [H, W, 3] image of ``gaussians`` from an orbit camera."""
    cam = orbit_camera(math.radians(yaw_deg), math.radians(pitch_deg), settings.radius, settings.fov,
                       settings.resolution)
    device = gaussians.get_xyz.device
    out = render_gaussians(gaussians, cam.to(device), bg_color=settings.bg_color)
    return (out.rgb.clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()


def _tick(progress: Optional[Callable[[], None]]) -> None:
    if progress is not None:
        progress()


def render_novel(gaussians: Sequence[Any], settings: RenderSettings, progress=None) -> List[np.ndarray]:
    frames = []
    for g in gaussians:
        frames.append(render_view(g, settings.yaw, settings.pitch, settings))
        _tick(progress)
    return frames


def turntable_length(num_frames: int, settings: RenderSettings) -> int:
    if settings.turntable_frames:
        return int(settings.turntable_frames)
    return num_frames * max(1, math.ceil(MIN_TURNTABLE_FRAMES / num_frames))


def render_turntable(gaussians: Sequence[Any], settings: RenderSettings, progress=None) -> List[np.ndarray]:
    """Frame k: time ``k mod T``, yaw ``settings.yaw + 360°·k/n``, pitch ``settings.pitch``."""
    n = turntable_length(len(gaussians), settings)
    frames = []
    for k in range(n):
        frames.append(render_view(gaussians[k % len(gaussians)], settings.yaw + 360.0 * k / n, settings.pitch, settings))
        _tick(progress)
    return frames


def render_grid(gaussians: Sequence[Any], settings: RenderSettings, progress=None) -> List[np.ndarray]:
    frames = []
    for g in gaussians:
        tiles = []
        for yaw in GRID_YAWS_DEG:
            tiles.append(render_view(g, yaw, GRID_PITCH_DEG, settings))
            _tick(progress)
        frames.append(np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0))
    return frames


def render_compare(images: Sequence[Any], novel: Sequence[np.ndarray], settings: RenderSettings) -> List[np.ndarray]:
    """The preprocessed input (resized to the render size) beside the novel view."""
    from PIL import Image

    res = settings.resolution
    out = []
    for im, view in zip(images, novel):
        im = im if hasattr(im, "resize") else Image.fromarray(np.asarray(im))
        left = np.asarray(im.convert("RGB").resize((res, res), Image.Resampling.LANCZOS))
        out.append(np.concatenate([left, view], axis=1))
    return out


def render_count(kinds: Sequence[str], num_frames: int, settings: RenderSettings) -> int:
    n = 0
    if "novel" in kinds or "compare" in kinds:
        n += num_frames
    if "turntable" in kinds:
        n += turntable_length(num_frames, settings)
    if "grid" in kinds:
        n += 4 * num_frames
    return n


def render_all(gaussians: Sequence[Any], images: Sequence[Any], kinds: Sequence[str], settings: RenderSettings,
               progress: bool = False) -> Dict[str, List[np.ndarray]]:
    """Every requested kind (``RENDER_KINDS``) -> its frames; one tqdm bar over all renders."""
    from tqdm.auto import tqdm

    unknown = [k for k in kinds if k not in RENDER_KINDS]
    if unknown:
        raise ValueError(f"unknown render kind(s) {unknown}; choose from {RENDER_KINDS}")
    bar = tqdm(total=render_count(kinds, len(gaussians), settings), desc="Rendering", disable=not progress)
    out: Dict[str, List[np.ndarray]] = {}
    try:
        novel = None
        if "novel" in kinds or "compare" in kinds:
            novel = render_novel(gaussians, settings, bar.update)
        if "novel" in kinds:
            out["novel"] = novel
        if "turntable" in kinds:
            out["turntable"] = render_turntable(gaussians, settings, bar.update)
        if "grid" in kinds:
            out["grid"] = render_grid(gaussians, settings, bar.update)
        if "compare" in kinds:
            out["compare"] = render_compare(images, novel, settings)
    finally:
        bar.close()
    return out

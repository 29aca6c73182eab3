"""Clip windows over any :class:`~ss4d.data.layout.DatasetReader`, the per-stage sample loaders' common
parts, and the conditioning frames.

* :class:`ClipIndex`: the clips a stage can use (``status`` ok, not flagged, holding the stage's latent /
  feature set) and how many frames each offers: ``min(num_real_frames, max_frame)`` (frames past the end of
  an animation are never drawn; ``num_real_frames`` falls back to ``num_frames`` for older datasets).
* Windows: T frames at a stride from the config's list, starting anywhere the window fits. Clips too short
  for a phase are skipped (and counted); a phase no clip fits is an error.
* Every random choice of a sample (stride, start, view, masks, background) comes from
  ``numpy.random.default_rng(keyed_seed(seed, step, rank, slot))``: a pure function of the sample's key.
* Conditioning frames: one random rendered view shared by the clip's frames (``cond_source: renders``)
  or the fixed-camera video (``cond``), preprocessed as at inference (:func:`ss4d.preprocess.preprocess_frames`),
  then masked (:mod:`ss4d.training.masking`): float32 [T, 3, 518, 518] in [0, 1]; a mirrored window's
  (:mod:`ss4d.training.mirror`) are flipped left-right first.
* Their crop (``dataset.cond_crop``): ``window`` [default] crops around the window's own frames, as inference
  crops around the frames it is given; ``clip`` around all the clip's frames (the same view), the frames whose
  union bounding box the clip's normalisation fills (:func:`ss4d.data.mesh.normalize_clip`). With ``clip`` a
  frame's image is the same in every window and in a one-frame window (3D pretraining) equals its image when
  the whole clip is the input, so the object's size in the image says its size in the grid; with ``window`` a
  one-frame window is cropped to that frame's pose alone, which the clip-normalised target does not follow.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from trellis_ext.training.flow import keyed_seed

from ..data.layout import STATUS_OK, DatasetReader
from ..preprocess import preprocess_frames, union_bbox
from .errors import TrainingInputError
from .color_augment import ColorConfig, apply_color, draw_color
from .masking import MaskConfig, apply_masks, draw_masks
from .mirror import mirror_images

__all__ = ["ClipInfo", "ClipIndex", "Window", "sample_rng", "conditioning_frames", "DATA_SALT", "COND_CROPS"]

DATA_SALT = 0xDA7A  # keys the per-sample numpy generators apart from the model-side draws
COND_CROPS = ("window", "clip")   # dataset.cond_crop: the frames whose union bounding box the crop is around


@dataclass(frozen=True)
class ClipInfo:
    clip_id: str
    usable_frames: int
    record: dict


@dataclass(frozen=True)
class Window:
    """``frames`` of clip ``clip_id``; ``mirrored``: of the clip's mirror image (:mod:`ss4d.training.mirror`)."""
    clip_id: str
    frames: List[int]
    mirrored: bool = False


def sample_rng(seed: int, step: int, rank: int, slot: int) -> np.random.Generator:
    return np.random.default_rng(keyed_seed(DATA_SALT, seed, step, rank, slot))


def _names(name: Union[None, str, Sequence[str]]) -> Tuple[str, ...]:
    return () if name is None else (name,) if isinstance(name, str) else tuple(name)


def _has(record: dict, kind: str, name: Union[None, str, Sequence[str]]) -> bool:
    return all((record.get(kind) or {}).get(n) for n in _names(name))


class ClipIndex:
    """The clips of a dataset a stage can train on (see the module docstring).

    ``requires``: ``{record kind: set name or names}`` that must be present (``ss_latents``, ``latents``,
    ``features``).
    ``exclude``: clip ids held out (validation)."""

    def __init__(self, reader: DatasetReader, requires: Dict[str, Optional[str]], max_frame: int,
                 strides: Sequence[int], source: str = "dataset", exclude: Sequence[str] = ()):
        records = reader.clip_records()
        if not records:
            raise TrainingInputError(f"{source} holds no clips", "build one with ss4d-build-dataset (docs/data.md)")
        self.strides = sorted({int(s) for s in strides})
        if not self.strides or self.strides[0] < 1:
            raise TrainingInputError(f"bad dataset.strides {list(strides)}", "use positive integers, e.g. [1, 2]")
        ok = [r for r in records if r.get("status") == STATUS_OK and not r.get("flagged")]
        missing = {k: n for k, v in requires.items() for n in _names(v) if not any(_has(r, k, n) for r in ok)}
        if not ok:
            raise TrainingInputError(f"{source}: none of its {len(records)} clips is usable (status ok, not flagged)",
                                     "rebuild it or check metadata.csv")
        if missing:
            kind, name = next(iter(missing.items()))
            have = sorted({n for r in ok for n in (r.get(kind) or {})})
            raise TrainingInputError(f"{source} has no {kind} set {name!r} (it has: {', '.join(have) or 'none'})",
                                     _hint(kind))
        exclude = set(exclude)
        self.clips: List[ClipInfo] = []
        self.held_out: List[ClipInfo] = []
        for r in ok:
            if not all(_has(r, k, v) for k, v in requires.items()):
                continue
            frames = int(r.get("num_real_frames") or r["num_frames"])
            info = ClipInfo(r["clip_id"], min(frames, int(r["num_frames"]), int(max_frame)), r)
            (self.held_out if info.clip_id in exclude else self.clips).append(info)
        if not self.clips:
            raise TrainingInputError(f"{source}: every usable clip is held out for validation",
                                     "shorten dataset.val_clips")

    def span(self, frames: int, stride: int) -> int:
        return (frames - 1) * stride + 1

    def fitting(self, frames: int) -> List[ClipInfo]:
        """Clips long enough for ``frames`` at the smallest stride."""
        return [c for c in self.clips if c.usable_frames >= self.span(frames, self.strides[0])]

    def window(self, clip: ClipInfo, frames: int, rng: np.random.Generator) -> Window:
        strides = [s for s in self.strides if clip.usable_frames >= self.span(frames, s)]
        stride = strides[int(rng.integers(len(strides)))]
        start = int(rng.integers(clip.usable_frames - self.span(frames, stride) + 1))
        return Window(clip.clip_id, list(range(start, start + self.span(frames, stride), stride)))


def _hint(kind: str) -> str:
    return {"ss_latents": "encode SS latents: ss4d-build-dataset ... --ss-encoder PATH (with --ss-mirror for the "
                          "mirrored set that dataset.mirror needs; docs/data.md)",
            "latents": "encode SLat latents with the run's encoder: ss4d-build-dataset ... --slat-encoder PATH",
            "features": "extract features: ss4d-build-dataset ... --feature-model PATH"}.get(kind, "see docs/data.md")


def _clip_bbox(reader: DatasetReader, window: Window, video: Optional[np.ndarray], view: Optional[int],
               clip_frames: int, cache: Optional[Dict[tuple, Tuple[int, int, int, int]]]) -> Tuple[int, int, int, int]:
    """The union box (x0, y0, x1, y1) of the object over all the clip's frames: those of ``video`` (the
    conditioning video, already loaded) or of rendered ``view``; of the mirrored frames for a mirrored window;
    kept in ``cache``."""
    key = (window.clip_id, view, window.mirrored)
    if cache is not None and key in cache:
        return cache[key]
    if video is not None:
        frames = list(video)
    elif clip_frames < 1:
        raise ValueError("the clip crop of rendered views needs the clip's frame count (clip_frames)")
    else:
        frames = [reader.load_views(window.clip_id, t)[0][view] for t in range(clip_frames)]
    bbox = union_bbox([a[..., 3] for a in (mirror_images(frames) if window.mirrored else frames)])
    if cache is not None:
        cache[key] = bbox
    return bbox


def conditioning_frames(reader: DatasetReader, window: Window, cond_source: str, mask: MaskConfig,
                        rng: np.random.Generator, augment: bool = True,
                        color: Optional[ColorConfig] = None, crop: str = "window", clip_frames: int = 0,
                        bbox_cache: Optional[Dict[tuple, Tuple[int, int, int, int]]] = None) -> torch.Tensor:
    """The window's conditioning frames (flipped left-right for a mirrored window), preprocessed and (``augment``)
    colour-changed (``color``, one change per clip) and masked: float32 [T, 3, 518, 518].

    ``crop``: ``window`` (around these frames) or ``clip`` (around the clip's ``clip_frames`` frames of the same
    view; the module docstring); ``bbox_cache`` keeps the clip boxes, keyed by (clip, view, mirrored)."""
    if cond_source == "cond":
        video, _ = reader.load_cond(window.clip_id)
        rgba = [video[t] for t in window.frames]
        view = None
    else:
        rgba, view, video = [], None, None
        for t in window.frames:
            views, _ = reader.load_views(window.clip_id, t)
            if view is None:
                view = int(rng.integers(len(views)))
            rgba.append(views[view])
    if window.mirrored:
        rgba = mirror_images(rgba)
    if crop not in COND_CROPS:
        raise TrainingInputError(f"dataset.cond_crop {crop!r}", f"use one of {', '.join(COND_CROPS)}")
    bbox = _clip_bbox(reader, window, video, view, clip_frames, bbox_cache) if crop == "clip" else None
    images, _ = preprocess_frames(rgba, bbox=bbox)
    x = np.stack([np.asarray(im, dtype=np.uint8) for im in images])
    if augment:
        if color is not None and color.prob > 0:     # drawn only when enabled: the mask draws stay as they were
            x = apply_color(x, draw_color(color, rng))
        x = apply_masks(x, draw_masks(x, mask, rng))
    return torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255.0)

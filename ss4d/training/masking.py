"""Masking augmentation of the conditioning frames (SS4D: "random black masks"; the probabilities and
sizes are our design, see ``../shared/notes/training.md`` §6.5).

Applied to the *preprocessed* conditioning frames only (518² premultiplied RGB, black background), never
to the targets, so a black rectangle is a hole in the object, like an occlusion:

* with probability ``clip_prob`` a clip is augmented; then each frame with probability ``frame_prob`` gets
  1..``max_rects`` black rectangles whose sides are ``min_size``..``max_size`` of the object's box (the
  bounding box of the non-black pixels), placed inside that box;
* with probability ``blackout_prob`` an augmented clip's frame goes entirely black instead;
* frame 0 is spared when ``keep_first``.

Every draw comes from the ``numpy.random.Generator`` the caller passes, keyed by (seed, step, rank,
sample) in :mod:`ss4d.training.data`, so the masks are reproducible (and visible in snapshots).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

__all__ = ["MaskConfig", "draw_masks", "apply_masks", "object_box"]


@dataclass(frozen=True)
class MaskConfig:
    clip_prob: float = 0.5
    frame_prob: float = 0.3
    max_rects: int = 3
    min_size: float = 0.05
    max_size: float = 0.25
    blackout_prob: float = 0.05
    keep_first: bool = False

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "MaskConfig":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            from .errors import TrainingInputError

            raise TrainingInputError(f"unknown conditioning.mask keys {sorted(unknown)}",
                                     f"use {', '.join(cls.__dataclass_fields__)}")
        return cls(**d)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def object_box(image: np.ndarray) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1) half-open box of the non-black pixels of [H, W, 3] (whole image when all black)."""
    ys, xs = np.nonzero(image.max(axis=-1) > 0)
    if len(xs) == 0:
        return 0, 0, image.shape[1], image.shape[0]
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def draw_masks(images: np.ndarray, cfg: MaskConfig, rng: np.random.Generator) -> np.ndarray:
    """Boolean masks [T, H, W] (True = set to black) for frames ``images`` [T, H, W, 3]."""
    t, h, w = images.shape[:3]
    masks = np.zeros((t, h, w), dtype=bool)
    if rng.random() >= cfg.clip_prob:
        return masks
    for i in range(t):
        u_blackout, u_frame = rng.random(), rng.random()
        if i == 0 and cfg.keep_first:
            continue
        if u_blackout < cfg.blackout_prob:
            masks[i] = True
            continue
        if u_frame >= cfg.frame_prob:
            continue
        x0, y0, x1, y1 = object_box(images[i])
        bw, bh = x1 - x0, y1 - y0
        for _ in range(int(rng.integers(1, cfg.max_rects + 1))):
            rw = max(1, int(round(bw * rng.uniform(cfg.min_size, cfg.max_size))))
            rh = max(1, int(round(bh * rng.uniform(cfg.min_size, cfg.max_size))))
            cx = x0 + int(rng.integers(0, max(1, bw - rw + 1)))
            cy = y0 + int(rng.integers(0, max(1, bh - rh + 1)))
            masks[i, cy:cy + rh, cx:cx + rw] = True
    return masks


def apply_masks(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``images`` [T, H, W, C] with the masked pixels set to 0 (black); a new array."""
    out = images.copy()
    out[masks] = 0
    return out

"""SS4D's frame preprocessing (``TrellisVideoTo4DPipeline.preprocess_images``), bit-exact.

For RGBA frames (after matting, see :mod:`ss4d.matting`):

1. one **union bounding box** over all frames of the pixels with alpha > 0 (TRELLIS's single
   image path uses alpha > 0.8·255; SS4D uses > 0 and one box for the whole clip, so the object
   does not jitter between frames);
2. centre = box centre, half side = max(w, h) / 2 · 1.2 (w, h = max − min of the pixel indices),
   crop box = ``int(centre ± half)``; Pillow pads outside the image with zeros;
3. resize to 518 × 518 (Lanczos), premultiply RGB by alpha (black background), truncate to uint8.

The result reproduces the official ``preprocessed_{t}.png`` of the SS4D tiny-pipeline fixture
exactly (max |diff| 0).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Sequence, Tuple, Union

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    import PIL.Image

__all__ = ["union_bbox", "crop_box", "preprocess_frames", "to_rgba_arrays", "CONDITION_SIZE", "BBOX_SCALE"]

CONDITION_SIZE = 518
BBOX_SCALE = 1.2

Frame = Union[np.ndarray, "PIL.Image.Image"]


def to_rgba_arrays(frames: Sequence[Frame]) -> List[np.ndarray]:
    """PIL images or uint8 arrays -> uint8 ``[H, W, 4]`` arrays (RGB input gets alpha 255)."""
    out = []
    for f in frames:
        if hasattr(f, "convert"):  # PIL
            f = np.asarray(f.convert("RGBA") if f.mode != "RGBA" else f)
        f = np.asarray(f)
        if f.dtype != np.uint8:
            if np.issubdtype(f.dtype, np.floating):
                f = np.clip(np.round(f * 255.0), 0, 255).astype(np.uint8)
            else:
                raise InputError(f"frames must be uint8 or float in [0, 1], got dtype {f.dtype}")
        if f.ndim != 3 or f.shape[-1] not in (3, 4):
            raise InputError(f"frames must be [H, W, 3|4] images, got shape {tuple(f.shape)}")
        if f.shape[-1] == 3:
            f = np.concatenate([f, np.full(f.shape[:2] + (1,), 255, np.uint8)], axis=-1)
        out.append(f)
    return out


def union_bbox(alphas: Sequence[np.ndarray]) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1) inclusive pixel indices of alpha > 0 over all frames."""
    union = np.zeros(alphas[0].shape, bool)
    for a in alphas:
        if a.shape != union.shape:
            raise InputError(f"frames have different sizes {a.shape} vs {union.shape}", "give frames of one size")
        union |= a > 0
    if not union.any():
        raise InputError("the object mask is empty in every frame (alpha is 0 everywhere)",
                         "check the input's alpha channel / masks, or use another matting method (--matting)")
    ys = np.flatnonzero(union.any(axis=1))
    xs = np.flatnonzero(union.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])


def crop_box(bbox: Tuple[int, int, int, int], scale: float = BBOX_SCALE) -> Tuple[int, int, int, int]:
    """Square crop box around ``bbox`` (SS4D's arithmetic: int(centre ± max(w, h)/2·scale))."""
    x0, y0, x1, y1 = bbox
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) / 2 * scale
    return int(cx - half), int(cy - half), int(cx + half), int(cy + half)


def preprocess_frames(frames: Sequence[Frame], size: int = CONDITION_SIZE, scale: float = BBOX_SCALE):
    """RGBA frames -> list of ``size``² premultiplied RGB PIL images (SS4D's preprocessing).

    Returns ``(images, crop_box)``."""
    from PIL import Image

    rgba = to_rgba_arrays(frames)
    if not rgba:
        raise InputError("no frames to preprocess")
    box = crop_box(union_bbox([f[..., 3] for f in rgba]), scale)
    out = []
    for f in rgba:
        im = Image.fromarray(f, "RGBA").crop(box).resize((size, size), Image.Resampling.LANCZOS)
        a = np.asarray(im).astype(np.float32) / 255
        a = a[..., :3] * a[..., 3:4]
        out.append(Image.fromarray((a * 255).astype(np.uint8)))
    return out, box

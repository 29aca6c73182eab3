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

Degenerate inputs are refused with an :class:`InputError` instead of giving black conditioning
frames: frames smaller than :data:`MIN_FRAME_SIZE` pixels a side, and an object whose union box is
smaller than :data:`MIN_OBJECT_SIZE` pixels a side. Frames may be PIL images, uint8 arrays, float
arrays in [0, 1] (NaN or values outside are refused) or image file paths.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple, Union

import os

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    import PIL.Image

__all__ = ["union_bbox", "crop_box", "preprocess_frames", "to_rgba_arrays", "check_frame_size", "uses_alpha", "image_to_array",
           "refuse_mixed_alpha", "CONDITION_SIZE",
           "BBOX_SCALE", "MIN_FRAME_SIZE", "MIN_OBJECT_SIZE"]

CONDITION_SIZE = 518
BBOX_SCALE = 1.2
#: Smallest frame side accepted (the solid matte's border ring and any object need room).
MIN_FRAME_SIZE = 16
#: Smallest side of the object's union box, in pixels (smaller boxes upsample noise to 518²).
MIN_OBJECT_SIZE = 4
#: Tolerance on float frames' [0, 1] range (rounding of upstream conversions).
FLOAT_RANGE_TOL = 1e-3


def check_frame_size(width: int, height: int, source: str = "the frames") -> None:
    """Refuse frames too small to hold an object (:data:`MIN_FRAME_SIZE`)."""
    if min(width, height) < MIN_FRAME_SIZE:
        raise InputError(f"{source} are {width}x{height} pixels; SS4D needs at least {MIN_FRAME_SIZE} pixels a side",
                         "give the original, larger frames (the object is resized to 518x518 anyway)")


def uses_alpha(frame: np.ndarray) -> bool:
    """The frame has an alpha channel that is not fully opaque."""
    return frame.ndim == 3 and frame.shape[-1] == 4 and int(frame[..., 3].min()) < 255


def refuse_mixed_alpha(frames: Sequence[np.ndarray], names: Optional[Sequence[str]] = None) -> None:
    """Refuse a clip where some frames are transparent and others are not: the opaque ones would
    keep their whole background as "object" (there is no per-frame matting)."""
    flags = [uses_alpha(f) for f in frames]
    if any(flags) and not all(flags):
        opaque = [names[i] if names else f"frame {i}" for i, used in enumerate(flags) if not used]
        raise InputError(f"{len(opaque)} of {len(frames)} frames have no transparency (first: {opaque[0]}) while the "
                         f"others are cut out with an alpha channel",
                         "export every frame as an RGBA PNG with a transparent background, or every frame as RGB "
                         "and let --matting cut the object out")


def _float_to_uint8(f: np.ndarray) -> np.ndarray:
    if not np.isfinite(f).all():
        raise InputError("frames hold NaN or infinite values", "give float frames in [0, 1] or uint8 frames")
    lo, hi = float(f.min()), float(f.max())
    if lo < -FLOAT_RANGE_TOL or hi > 1 + FLOAT_RANGE_TOL:
        raise InputError(f"float frames must be in [0, 1], got values in [{lo:g}, {hi:g}]",
                         "divide 0-255 frames by 255, or pass them as uint8")
    return np.clip(np.round(f * 255.0), 0, 255).astype(np.uint8)


def image_to_array(im) -> np.ndarray:
    """A Pillow image -> uint8 RGBA (when it has transparency) or RGB array; 16-bit grayscale is
    scaled to 8 bits, not clipped."""
    if im.mode.startswith("I;16") or im.mode == "I":  # Pillow opens 16-bit grayscale PNGs as I;16 / I
        top = np.iinfo(np.uint16).max
        gray = np.clip(np.asarray(im).astype(np.float64), 0, top)
        gray = np.round(gray * (np.iinfo(np.uint8).max / top)).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if im.mode == "F":
        raise InputError(f"frame {getattr(im, 'filename', '')} holds floating-point pixels (mode F)",
                         "save the frames as 8- or 16-bit PNGs")
    return np.asarray(im.convert("RGBA" if ("A" in im.mode or "transparency" in im.info) else "RGB"))


def _open_path(path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return image_to_array(im)
    except (OSError, UnidentifiedImageError) as e:
        raise InputError(f"cannot read frame {os.fspath(path)} ({e})",
                         "give image files, PIL images or arrays") from None

Frame = Union[np.ndarray, "PIL.Image.Image"]


def to_rgba_arrays(frames: Sequence[Frame]) -> List[np.ndarray]:
    """PIL images or uint8 arrays -> uint8 ``[H, W, 4]`` arrays (RGB input gets alpha 255)."""
    out = []
    for f in frames:
        if isinstance(f, (str, os.PathLike)):
            f = _open_path(f)
        if hasattr(f, "convert"):  # PIL
            f = np.asarray(f.convert("RGBA") if f.mode != "RGBA" else f)
        f = np.asarray(f)
        if f.dtype != np.uint8:
            if np.issubdtype(f.dtype, np.floating):
                f = _float_to_uint8(f)
            else:
                raise InputError(f"frames must be uint8 or float in [0, 1], got dtype {f.dtype}",
                                 "pass PIL images, image paths, uint8 arrays or float arrays in [0, 1]")
        if f.ndim != 3 or f.shape[-1] not in (3, 4):
            raise InputError(f"frames must be [H, W, 3|4] images, got shape {tuple(f.shape)}")
        out.append(f)
    refuse_mixed_alpha(out)
    return [np.concatenate([f, np.full(f.shape[:2] + (1,), 255, np.uint8)], axis=-1) if f.shape[-1] == 3 else f
            for f in out]


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
    x0, y0, x1, y1 = int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])
    if max(x1 - x0, y1 - y0) + 1 < MIN_OBJECT_SIZE:
        raise InputError(f"the object is only {x1 - x0 + 1}x{y1 - y0 + 1} pixels (over all frames); SS4D needs at "
                         f"least {MIN_OBJECT_SIZE} pixels a side", "check the alpha channel / masks, or give frames "
                         "where the object is larger")
    return x0, y0, x1, y1


def crop_box(bbox: Tuple[int, int, int, int], scale: float = BBOX_SCALE) -> Tuple[int, int, int, int]:
    """Square crop box around ``bbox`` (SS4D's arithmetic: int(centre ± max(w, h)/2·scale))."""
    x0, y0, x1, y1 = bbox
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) / 2 * scale
    return int(cx - half), int(cy - half), int(cx + half), int(cy + half)


def preprocess_frames(frames: Sequence[Frame], size: int = CONDITION_SIZE, scale: float = BBOX_SCALE,
                      bbox: Optional[Tuple[int, int, int, int]] = None):
    """RGBA frames -> list of ``size``² premultiplied RGB PIL images (SS4D's preprocessing).

    ``bbox``: the object's (x0, y0, x1, y1) to crop around (default: :func:`union_bbox` of these frames; the
    trainers pass a whole clip's, see ``dataset.cond_crop``). Returns ``(images, crop_box)``."""
    from PIL import Image

    rgba = to_rgba_arrays(frames)
    if not rgba:
        raise InputError("no frames to preprocess")
    check_frame_size(rgba[0].shape[1], rgba[0].shape[0])
    box = crop_box(bbox if bbox is not None else union_bbox([f[..., 3] for f in rgba]), scale)
    out = []
    for f in rgba:
        im = Image.fromarray(f, "RGBA").crop(box).resize((size, size), Image.Resampling.LANCZOS)
        a = np.asarray(im).astype(np.float32) / 255
        a = a[..., :3] * a[..., 3:4]
        out.append(Image.fromarray((a * 255).astype(np.uint8)))
    return out, box

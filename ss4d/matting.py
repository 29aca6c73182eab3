"""Pluggable matting: RGB frames -> RGBA frames (the object's alpha) before preprocessing.

SS4D conditions on the object alone (its official code asserts RGBA input and has no background
removal). Methods, chosen by name (``matte_frames(frames, method=...)``):

* ``"alpha"``: the input already has an alpha channel; use it as is.
* ``"solid"``: the built-in solid-background matte. It estimates the background colour from a
  ring of border pixels over all frames (median), checks that the background really is one
  colour (at least 90% of the border pixels within :data:`BORDER_MATCH_TOL` of it), keys it out
  with a soft edge (alpha ramps from 0 to 1 as the per-pixel max channel distance goes from
  ``lo`` to ``lo + SOFT_WIDTH``; ``lo`` sits above the border's compression noise), keeps the
  largest connected component, fills small holes inside it (highlights that match the background
  colour), and keeps the soft edge next to the component. Works on the white-background clips in
  ``../shared/data/videos``.
* ``"rembg"``: the ``rembg`` package with a model file already on disk (``$U2NET_HOME`` or
  ``~/.u2net/<model>.onnx``; nothing is downloaded).
* ``"mask-dir"``: one mask image per frame from a folder (``mask_dir=``): grayscale (white =
  object) or the alpha of an RGBA image, named in the same natural order as the frames.
* ``"auto"`` (default): ``alpha`` when the frames have one, else ``mask-dir`` when given, else
  ``solid`` when the border is one colour, else ``rembg`` when usable, else an :class:`InputError`
  naming these options.

New methods: ``register_matting("name", fn)`` where ``fn(frames: list[uint8 HxWx3]) -> list[uint8
HxW alpha]``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError
from .preprocess import uses_alpha

__all__ = ["matte_frames", "solid_background_matte", "estimate_background", "rembg_available", "rembg_matte",
           "masks_from_dir", "register_matting", "MATTING_METHODS", "NO_MATTE_HINT"]

BORDER_FRACTION = 0.02     # border ring width as a fraction of min(H, W) (at least 2 px)
BORDER_MATCH_TOL = 0.10    # a border pixel "is background" within this max-channel distance (0..1)
BORDER_MATCH_MIN = 0.90    # fraction of border pixels that must match for a solid background
NOISE_PERCENTILE = 99.0    # border-distance percentile taken as the compression noise floor
MIN_KEY_LOW = 0.03         # lowest distance still considered background
SOFT_WIDTH = 0.08          # width of the soft-edge ramp (distance units)
HOLE_MAX_FRACTION = 0.02   # holes up to this fraction of the component area are filled
EDGE_DILATION = 2          # soft-edge pixels kept within this many px of the component
REMBG_MODEL = "u2net"

NO_MATTE_HINT = ("give RGBA frames (a PNG folder with transparency), pass --mask-dir DIR with one mask "
                 "per frame, or install rembg with a local model file (~/.u2net/u2net.onnx)")

MattingFn = Callable[[List[np.ndarray]], List[np.ndarray]]


# ------------------------------------------------------------------------------ solid background
def _border_pixels(frames: Sequence[np.ndarray]) -> np.ndarray:
    h, w = frames[0].shape[:2]
    b = max(2, int(round(BORDER_FRACTION * min(h, w))))
    parts = []
    for f in frames:
        f = f[..., :3]
        parts += [f[:b].reshape(-1, 3), f[-b:].reshape(-1, 3), f[b:-b, :b].reshape(-1, 3), f[b:-b, -b:].reshape(-1, 3)]
    return np.concatenate(parts).astype(np.float32) / 255.0


def estimate_background(frames: Sequence[np.ndarray]) -> Tuple[np.ndarray, float, float]:
    """(background RGB in [0, 1], fraction of border pixels matching it, border noise level)."""
    border = _border_pixels(frames)
    bg = np.median(border, axis=0)
    dist = np.abs(border - bg).max(axis=1)
    match = float((dist <= BORDER_MATCH_TOL).mean())
    noise = float(np.percentile(dist[dist <= BORDER_MATCH_TOL], NOISE_PERCENTILE)) if match > 0 else 1.0
    return bg, match, noise


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (1 + int(np.argmax(sizes)))


def _fill_small_holes(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    holes = ndimage.binary_fill_holes(mask) & ~mask
    if not holes.any():
        return mask
    labels, n = ndimage.label(holes)
    sizes = np.bincount(labels.ravel())
    small = sizes <= HOLE_MAX_FRACTION * mask.sum()
    small[0] = False
    return mask | small[labels]


def solid_background_matte(frames: List[np.ndarray], background: Optional[Sequence[float]] = None) -> List[np.ndarray]:
    """Alpha (uint8 [H, W]) per RGB frame for a solid-colour background (see module docstring).

    Raises :class:`InputError` when the border is not one colour."""
    from scipy import ndimage

    bg, match, noise = estimate_background(frames)
    if background is not None:
        bg = np.asarray(background, np.float32)
    elif match < BORDER_MATCH_MIN:
        raise InputError(f"the background is not a solid colour (only {100 * match:.0f}% of the frame border "
                         f"matches one colour), so the built-in matting cannot separate the object",
                         NO_MATTE_HINT)
    lo = max(MIN_KEY_LOW, noise + 0.01)
    alphas = []
    for f in frames:
        rgb = f[..., :3].astype(np.float32) / 255.0
        dist = np.abs(rgb - bg).max(axis=-1)
        soft = np.clip((dist - lo) / SOFT_WIDTH, 0.0, 1.0)
        soft = soft * soft * (3 - 2 * soft)                       # smoothstep edge
        core = _largest_component(soft > 0.5)
        if not core.any():
            alphas.append(np.zeros(dist.shape, np.uint8))
            continue
        filled = _fill_small_holes(core)
        near = ndimage.binary_dilation(core, iterations=EDGE_DILATION)
        # inside: the (hole-filled) component; outside: only the soft ramp next to it (< 0.5, so other
        # components, which are > 0.5 by definition, are dropped)
        alpha = np.where(filled, np.maximum(soft, filled & ~core), np.where(near & (soft < 0.5), soft, 0.0))
        alphas.append(np.round(alpha * 255).astype(np.uint8))
    if not any(a.any() for a in alphas):
        raise InputError("no object found: every frame is just the plain background colour (the solid-background "
                         "matting keyed out everything)", "check that the clip shows the object, or " + NO_MATTE_HINT)
    return alphas


# ------------------------------------------------------------------------------ rembg
def _rembg_model_path(model: str = REMBG_MODEL) -> Path:
    home = os.environ.get("U2NET_HOME", os.path.join(os.path.expanduser("~"), ".u2net"))
    return Path(home) / f"{model}.onnx"


def rembg_available(model: str = REMBG_MODEL) -> bool:
    """rembg imports and its model file is already on disk (it would otherwise download it)."""
    try:
        import rembg  # noqa: F401
    except Exception:
        return False
    return _rembg_model_path(model).is_file()


def rembg_matte(frames: List[np.ndarray], model: str = REMBG_MODEL) -> List[np.ndarray]:
    if not rembg_available(model):
        raise InputError(f"rembg matting needs the rembg package and the model file {_rembg_model_path(model)}",
                         "pip install rembg onnxruntime and place the model there, or use another matting "
                         "option: " + NO_MATTE_HINT)
    import rembg
    from PIL import Image

    session = rembg.new_session(model)
    out = []
    for f in frames:
        mask = rembg.remove(Image.fromarray(f[..., :3]), session=session, only_mask=True)
        out.append(np.asarray(mask.convert("L"), dtype=np.uint8))
    return out


# ------------------------------------------------------------------------------ mask folder
def masks_from_dir(mask_dir, frame_count: int, size: Tuple[int, int], source_indices: Optional[Sequence[int]] = None,
                   frame_names: Optional[Sequence[str]] = None) -> List[np.ndarray]:
    """One uint8 mask per selected frame from ``mask_dir``.

    Matching: a mask with the same file stem as the frame (frame folders); else, when the folder
    holds one mask per *source* frame, the mask at each frame's source index; else exactly one
    mask per selected frame, in natural order."""
    from PIL import Image

    from .io.video import list_frame_files

    folder = Path(mask_dir)
    if not folder.is_dir():
        raise InputError(f"--mask-dir {folder} is not a folder", "give a folder with one mask image per frame")
    files = list_frame_files(folder)
    if not files:
        raise InputError(f"--mask-dir {folder} has no mask images", "put one .png mask per frame there")
    by_stem = {p.stem: p for p in files}
    chosen: List[Path]
    if frame_names and all(Path(n).stem in by_stem for n in frame_names):
        chosen = [by_stem[Path(n).stem] for n in frame_names]
    elif source_indices is not None and len(files) > max(source_indices):
        chosen = [files[i] for i in source_indices]
    elif len(files) == frame_count:
        chosen = files
    else:
        raise InputError(f"--mask-dir {folder} has {len(files)} masks but {frame_count} frames were selected",
                         "give one mask per source frame (same names or same order as the frames)")
    masks = []
    for p in chosen:
        try:
            with Image.open(p) as im:
                im.load()
                m = np.asarray(im.getchannel("A") if "A" in im.mode else im.convert("L"), dtype=np.uint8)
        except Exception as e:
            raise InputError(f"cannot read mask {p} ({e})", "replace the broken mask file") from None
        if (m.shape[1], m.shape[0]) != tuple(size):
            raise InputError(f"mask {p} is {m.shape[1]}x{m.shape[0]} but the frames are {size[0]}x{size[1]}",
                             "give masks of the same size as the frames")
        masks.append(m)
    return masks


# ------------------------------------------------------------------------------ registry
MATTING_METHODS: Dict[str, MattingFn] = {"solid": solid_background_matte, "rembg": rembg_matte}


def register_matting(name: str, fn: MattingFn) -> None:
    """Add a matting method: ``fn(list of uint8 [H, W, 3]) -> list of uint8 [H, W] alphas``."""
    MATTING_METHODS[name] = fn


def _attach(frames: List[np.ndarray], alphas: List[np.ndarray]) -> List[np.ndarray]:
    return [np.concatenate([f[..., :3], a[..., None]], axis=-1) for f, a in zip(frames, alphas)]


def matte_frames(frames: List[np.ndarray], method: str = "auto", mask_dir=None,
                 source_indices: Optional[Sequence[int]] = None,
                 frame_names: Optional[Sequence[str]] = None) -> Tuple[List[np.ndarray], str]:
    """RGBA frames (uint8 [H, W, 4]) and the name of the method used. See the module docstring."""
    if not frames:
        raise InputError("no frames to matte")
    has_alpha = any(uses_alpha(f) for f in frames)
    if mask_dir is not None and method in ("auto", "mask-dir"):
        h, w = frames[0].shape[:2]
        return _attach(frames, masks_from_dir(mask_dir, len(frames), (w, h), source_indices, frame_names)), "mask-dir"
    if method == "mask-dir":
        raise InputError("matting 'mask-dir' needs --mask-dir DIR", "pass the folder holding one mask per frame")
    if method == "alpha" or (method == "auto" and has_alpha):
        if not has_alpha:
            raise InputError("--matting alpha, but the frames have no transparency",
                             "use --matting auto/solid/rembg or give RGBA frames")
        return [np.ascontiguousarray(f) for f in frames], "alpha"
    rgb = [f[..., :3] for f in frames]
    if method == "auto":
        try:
            return _attach(rgb, solid_background_matte(rgb)), "solid"
        except InputError:
            if rembg_available():
                return _attach(rgb, rembg_matte(rgb)), "rembg"
            raise
    if method not in MATTING_METHODS:
        raise InputError(f"unknown matting method {method!r}",
                         f"use one of auto, alpha, mask-dir, {', '.join(sorted(MATTING_METHODS))}")
    return _attach(rgb, MATTING_METHODS[method](rgb)), method

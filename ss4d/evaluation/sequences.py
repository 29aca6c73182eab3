"""Folders of per-view, per-frame images, as ``ss4d-eval images`` reads them.

Layout (prediction and ground truth alike)::

    DIR/<view>/<frame>.png      one sub-folder per view (any names; matched by name between the two)
    DIR/<frame>.png             or the frames directly: one view, named "0"

Frame files are PNG/JPEG/WebP named by their frame number: the last integer of the file stem
(``0.png``, ``007.png``, ``frame_012.png``, ``12_rgba.png``). RGBA keeps its alpha (straight, not
premultiplied); RGB images get alpha 1 (the silhouette metric is then skipped). The Consistent4D
test set (``<object>/eval_0 .. eval_3/<frame>.png``, RGBA) is this layout with ``eval_*`` views:
:func:`read_consistent4d`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["IMAGE_SUFFIXES", "SINGLE_VIEW", "CONSISTENT4D_VIEW_GLOB", "ViewFrames", "list_views", "read_view",
           "read_consistent4d", "frame_number"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SINGLE_VIEW = "0"
CONSISTENT4D_VIEW_GLOB = "eval_*"
_LAST_INT = re.compile(r"(\d+)(?!.*\d)")


def frame_number(path: Path) -> int | None:
    """The last integer in a file's stem (None when it has none)."""
    m = _LAST_INT.search(path.stem)
    return int(m.group(1)) if m else None


@dataclass
class ViewFrames:
    """One view's frames: ``rgba`` uint8 [T, H, W, 4] (straight alpha), ``frames`` their numbers, and
    whether the files carried alpha."""

    name: str
    rgba: np.ndarray
    frames: list[int]
    has_alpha: bool


def _frame_files(folder: Path) -> dict[int, Path]:
    files = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            n = frame_number(p)
            if n is None:
                raise InputError(f"{p}: cannot tell its frame number (no digits in the name)",
                                 "name frames by number (0.png, 001.png, frame_002.png)")
            if n in files:
                raise InputError(f"{folder}: two files for frame {n} ({files[n].name}, {p.name})",
                                 "keep one image per frame")
            files[n] = p
    return files


def list_views(root: str | Path, view_glob: str = "*") -> dict[str, Path]:
    """``{view name: folder}`` of a sequence folder (sub-folders with images, else the folder itself)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder", "pass a folder of per-view image folders (docs/evaluation.md)")
    views = {p.name: p for p in sorted(root.glob(view_glob)) if p.is_dir() and _has_images(p)}
    if not views and view_glob == "*" and _has_images(root):
        views = {SINGLE_VIEW: root}
    if not views:
        raise InputError(f"{root} holds no images (looked for {view_glob}/<frame>.png and <frame>.png)",
                         "see the layout in docs/evaluation.md")
    return views


def _has_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


def read_view(folder: str | Path, name: str | None = None) -> ViewFrames:
    """Every frame of one view folder, sorted by frame number; frames must share one size."""
    from PIL import Image

    folder = Path(folder)
    files = _frame_files(folder)
    frames, imgs, alpha = sorted(files), [], True
    size = None
    for n in frames:
        with Image.open(files[n]) as im:
            alpha = alpha and ("A" in im.getbands() or "transparency" in im.info)
            arr = np.asarray(im.convert("RGBA"))
        if size is None:
            size = arr.shape[:2]
        elif arr.shape[:2] != size:
            raise InputError(f"{files[n]} is {arr.shape[1]}x{arr.shape[0]}, the view's other frames are "
                             f"{size[1]}x{size[0]}", "give every frame of a view one size")
        imgs.append(arr)
    return ViewFrames(name or folder.name, np.stack(imgs), frames, alpha)


def read_consistent4d(object_dir: str | Path) -> dict[str, Path]:
    """The ``eval_*`` view folders of one Consistent4D test object (ground truth or a method's renders)."""
    views = list_views(object_dir, CONSISTENT4D_VIEW_GLOB)
    return views

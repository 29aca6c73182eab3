"""Output folders written atomically: everything goes to a hidden temp folder beside the target,
which is renamed onto the target only when every file is written. A failed or interrupted run
leaves nothing behind (no half-written output folder, no stray temp folder).

``check_output_dir`` runs *before* the expensive work, so an unwritable or occupied destination is
reported at once (it probes by really creating and removing a temp folder, which also works for
root, where permission bits say nothing).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

from trellis_ext.atomic import atomic_directory

from ..errors import InputError

__all__ = ["check_output_dir", "OutputFolder"]

PathLike = Union[str, os.PathLike]


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    return p


def check_output_dir(path: PathLike, overwrite: bool = False) -> Path:
    """Validate the destination folder; raise :class:`InputError` saying what to do."""
    out = Path(os.path.abspath(os.fspath(path)))
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is a file", "choose a folder path with -o")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"output folder {out} already exists and is not empty",
                         "pass --overwrite to replace it, or choose another folder with -o")
    base = _nearest_existing(out.parent)
    if not base.is_dir():
        raise InputError(f"cannot create output folder {out}: {base} is a file, not a folder",
                         "choose a writable folder with -o")
    try:
        probe = tempfile.mkdtemp(dir=base, prefix=".ss4d-write-probe-")
        os.rmdir(probe)
    except OSError as e:
        raise InputError(f"cannot write to {base} ({e.strerror or e})",
                         "choose a writable folder with -o") from None
    return out


class OutputFolder:
    """``with OutputFolder(path, overwrite) as tmp:`` write into ``tmp``; on success ``tmp`` becomes
    ``path`` (replacing an existing folder only when ``overwrite``); on an exception it is removed
    (:func:`trellis_ext.atomic.atomic_directory`)."""

    def __init__(self, path: PathLike, overwrite: bool = False):
        self.path = check_output_dir(path, overwrite)
        self.overwrite = overwrite
        self._writer = None

    @contextlib.contextmanager
    def _write(self) -> Iterator[Path]:
        with atomic_directory(str(self.path), prefix=f".{self.path.name}.tmp-") as tmp:
            yield Path(tmp)
            if not self.overwrite and self.path.is_dir() and any(self.path.iterdir()):
                raise InputError(f"output folder {self.path} appeared while running",
                                 "pass --overwrite or choose another folder with -o")

    def __enter__(self) -> Path:
        self._writer = self._write()
        return self._writer.__enter__()

    def __exit__(self, exc_type, exc, tb) -> bool:
        return self._writer.__exit__(exc_type, exc, tb)

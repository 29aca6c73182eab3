"""Atomic, multi-process checkpoint folders: ``ROOT/step_0001234/`` appears only complete.

Protocol (``CheckpointFolders``; the writer is any function, e.g. ``accelerator.save_state``):

1. the main process :meth:`~CheckpointFolders.begin`\\ s step N: ``ROOT/.tmp-step_000000N`` is (re)created
   empty; a barrier follows so every rank sees it;
2. every rank writes its part into that folder (same name on every rank; with a shared file system);
3. after a barrier the main process :meth:`~CheckpointFolders.commit`\\ s: it writes ``COMPLETE.json``
   (fsynced), fsyncs the folder, renames it to ``ROOT/step_000000N`` and deletes all but the newest
   ``keep_last`` complete folders.

A process killed at any point leaves either the previous complete folders untouched plus a ``.tmp-*``
folder (removed by :meth:`~CheckpointFolders.clean_stale`), or the new complete folder.
:func:`latest_complete` only ever returns a folder holding the marker.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import List, Optional

from ..atomic import atomic_file

__all__ = ["CheckpointFolders", "latest_complete", "list_complete", "COMPLETE_MARKER", "step_of"]

COMPLETE_MARKER = "COMPLETE.json"
STEP_DIR = re.compile(r"^step_(\d{7,})$")
TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
STEP_DIGITS = 7


def step_dir_name(step: int) -> str:
    return f"step_{step:0{STEP_DIGITS}d}"


def step_of(path: os.PathLike) -> int:
    """The step number of a checkpoint folder ``.../step_0001234``."""
    m = STEP_DIR.match(Path(path).name)
    if not m:
        raise ValueError(f"{path} is not a checkpoint folder (step_NNNNNNN)")
    return int(m.group(1))


def list_complete(root: os.PathLike) -> List[Path]:
    """Complete checkpoint folders under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name) and (p / COMPLETE_MARKER).is_file()]
    return sorted(found, key=step_of)


def latest_complete(root: os.PathLike) -> Optional[Path]:
    done = list_complete(root)
    return done[-1] if done else None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class CheckpointFolders:
    """``ROOT/step_NNNNNNN`` folders written with the protocol of the module docstring."""

    def __init__(self, root: os.PathLike, keep_last: int = 3):
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.root, self.keep_last = Path(root), int(keep_last)

    def tmp_path(self, step: int) -> Path:
        return self.root / f"{TMP_PREFIX}{step_dir_name(step)}"

    def final_path(self, step: int) -> Path:
        return self.root / step_dir_name(step)

    def clean_stale(self) -> List[Path]:
        """Remove half-written folders (``.tmp-*``, ``.old-*``) of earlier runs; returns what was removed.
        Call on the main process only, before any rank writes."""
        removed = []
        if self.root.is_dir():
            for p in self.root.iterdir():
                if p.is_dir() and (p.name.startswith(TMP_PREFIX) or p.name.startswith(OLD_PREFIX)):
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
        return removed

    def begin(self, step: int) -> Path:
        tmp = self.tmp_path(step)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, step: int, info: Optional[dict] = None) -> Path:
        tmp, final = self.tmp_path(step), self.final_path(step)
        with atomic_file(tmp / COMPLETE_MARKER, "w") as f:
            json.dump({"step": int(step), **(info or {})}, f, indent=1)
        _fsync_dir(tmp)
        if final.exists():  # the same step saved again (a resumed run): swap, never leave neither
            old = self.root / f"{OLD_PREFIX}{final.name}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(self.root)
        self.prune()
        return final

    def prune(self) -> List[Path]:
        done = list_complete(self.root)
        drop = done[:-self.keep_last]
        for p in drop:
            shutil.rmtree(p, ignore_errors=True)
        return drop

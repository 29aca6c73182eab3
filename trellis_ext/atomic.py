"""All-or-nothing writers: build a folder or a file under a hidden temporary name beside the target,
then rename it into place. Every writer of the project (CLI outputs, ``save_pretrained``, checkpoints,
the dataset builder) goes through these two, so they share one behaviour:

- the target appears only complete; on any exception the temporary is removed and the target is
  left as it was;
- permissions follow the process umask like an ordinary ``open``/``mkdir`` would (``mkdtemp`` and
  ``mkstemp`` create 0700/0600, which would hide results from other users and web servers).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import IO, Iterator, Union

__all__ = ["atomic_directory", "atomic_file", "current_umask"]

PathLike = Union[str, os.PathLike]
DIR_MODE = 0o777   # what mkdir() asks for before the umask
FILE_MODE = 0o666  # what open() asks for before the umask


def current_umask() -> int:
    """The process umask (read by setting and restoring it; there is no read-only call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_directory(path: PathLike, prefix: str = ".tmp-") -> Iterator[str]:
    """Yield a temp folder; on success it replaces ``path`` (an existing folder is removed first),
    on any exception it is deleted and ``path`` is left as it was."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=prefix)
    try:
        os.chmod(tmp, DIR_MODE & ~current_umask())
        yield tmp
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(path: PathLike, mode: str = "wb", encoding: str | None = None,
                newline: str | None = None) -> Iterator[IO]:
    """Yield an open file under a hidden temporary name beside ``path``; on success it is flushed,
    fsynced and renamed over ``path``; on any exception it is deleted and ``path`` is untouched.

    ``mode`` is ``"wb"`` or ``"w"`` (text; ``encoding`` defaults to UTF-8)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file: mode must be 'w' or 'wb', got {mode!r}")
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    if mode == "w":
        f = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline=newline)
    else:
        f = os.fdopen(fd, "wb")
    try:
        os.chmod(tmp, FILE_MODE & ~current_umask())
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise

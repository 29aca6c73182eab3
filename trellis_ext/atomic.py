"""Write a folder all-or-nothing: build it in a hidden temp folder beside the target, then rename."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

__all__ = ["atomic_directory"]


@contextlib.contextmanager
def atomic_directory(path: str, prefix: str = ".tmp-") -> Iterator[str]:
    """Yield a temp folder; on success it replaces ``path`` (an existing folder is removed first),
    on any exception it is deleted and ``path`` is left as it was."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=prefix)
    try:
        yield tmp
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

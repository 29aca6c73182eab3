"""All-or-nothing writers: build a folder or a file under a hidden temporary name beside the target,
then rename it into place. Every writer of the project (CLI outputs, ``save_pretrained``, checkpoints,
the dataset builder) goes through these, so they share one behaviour:

- the target appears only complete; on any exception the temporary is removed and the target is
  left as it was;
- permissions follow the process umask like an ordinary ``open``/``mkdir`` would (``mkdtemp`` and
  ``mkstemp`` create 0700/0600, which would hide results from other users and web servers);
- temporaries are named ``<prefix>ss4dtmp<pid>-<8 chars>`` (files add ``.tmp``): the next writer
  into the same parent folder removes those of *dead* processes owned by the same user
  (:func:`sweep_stale_temps`), so a SIGKILL or power loss leaves nothing behind for long; no other
  name is ever touched.

:func:`atomic_directory` replaces a whole folder (moving the old one aside first, so the target is
never missing); :func:`merged_directory` moves each written file into an existing folder and leaves
every other file there alone.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile
from typing import IO, Iterator, Union

__all__ = ["atomic_directory", "atomic_file", "merged_directory", "current_umask", "sweep_stale_temps",
           "temp_name", "temp_prefix", "apply_umask", "TEMP_MARK"]

PathLike = Union[str, os.PathLike]
DIR_MODE = 0o777   # what mkdir() asks for before the umask
FILE_MODE = 0o666  # what open() asks for before the umask
EXEC_BITS = 0o111
#: Marks every temporary these writers create; followed by the owner's pid.
TEMP_MARK = "ss4dtmp"
#: Random characters after the pid (tempfile's alphabet; ``secrets.token_hex`` is a subset).
RANDOM_LEN = 8
FILE_SUFFIX = ".tmp"
ASIDE_TAG = "old-"  # the previous folder, renamed aside while the new one moves in
_STALE = re.compile(rf"{TEMP_MARK}(\d+)-[a-z0-9_]{{{RANDOM_LEN}}}(?:{re.escape(FILE_SUFFIX)})?$")


def current_umask() -> int:
    """The process umask (read by setting and restoring it; there is no read-only call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(path: PathLike) -> None:
    """Give ``path`` (a file, or a folder and everything below it) the modes ``open``/``mkdir``
    would have given it under the current umask. For third-party writers that create private
    0600 files (``safetensors.torch.save_file``, transformers' ``save_pretrained``). Executable
    files stay executable."""
    mask = current_umask()
    paths = [os.fspath(path)]
    if os.path.isdir(path):
        paths += [os.path.join(root, n) for root, dirs, files in os.walk(path) for n in dirs + files]
    for p in paths:
        if os.path.islink(p):
            continue
        if os.path.isdir(p):
            os.chmod(p, DIR_MODE & ~mask)
        else:
            executable = os.stat(p).st_mode & EXEC_BITS
            os.chmod(p, (DIR_MODE if executable else FILE_MODE) & ~mask)


def temp_prefix(prefix: str) -> str:
    """``prefix`` + the pid mark: give it to ``tempfile.mkdtemp``/``mkstemp``/``TemporaryDirectory``
    (which add the 8 random characters) so :func:`sweep_stale_temps` can recognise the result."""
    return f"{prefix}{TEMP_MARK}{os.getpid()}-"


def temp_name(prefix: str) -> str:
    """A name of the form the writers give their temporaries (for length checks and asides)."""
    return temp_prefix(prefix) + secrets.token_hex(RANDOM_LEN // 2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def sweep_stale_temps(parent: PathLike) -> list:
    """Remove this tool's temporaries in ``parent`` whose owner process is dead.

    Only entries whose name ends in ``ss4dtmp<pid>-<8 chars>[.tmp]``, owned by this user, not
    symlinks, whose pid is not a running process, are removed. Returns the removed paths."""
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    uid = os.getuid() if hasattr(os, "getuid") else None
    for e in entries:
        m = _STALE.search(e.name)
        if m is None or e.is_symlink():
            continue
        pid = int(m.group(1))
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if (uid is not None and st.st_uid != uid) or pid == os.getpid() or _alive(pid):
            continue
        if e.is_dir(follow_symlinks=False):
            shutil.rmtree(e.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(e.path)
        removed.append(e.path)
    return removed


def _new_temp_dir(path: str, prefix: str) -> str:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    sweep_stale_temps(parent)
    tmp = tempfile.mkdtemp(dir=parent, prefix=temp_prefix(prefix))
    os.chmod(tmp, DIR_MODE & ~current_umask())
    return tmp


@contextlib.contextmanager
def atomic_directory(path: PathLike, prefix: str = ".tmp-") -> Iterator[str]:
    """Yield a temp folder; on success it replaces ``path``, on any exception it is deleted and
    ``path`` is left as it was. An existing folder at ``path`` is first renamed aside (so ``path``
    is never missing and an interruption loses nothing), then deleted."""
    path = os.fspath(path)
    tmp = _new_temp_dir(path, prefix)
    try:
        yield tmp
        old = None
        if os.path.isdir(path) and not os.path.islink(path):
            old = os.path.join(os.path.dirname(os.path.abspath(path)), temp_name(f"{prefix}{ASIDE_TAG}"))
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def merged_directory(path: PathLike, prefix: str = ".tmp-") -> Iterator[str]:
    """Yield a temp folder; on success each file written there is renamed onto the same relative
    path in ``path`` (created if missing), replacing only those files: everything else already in
    ``path`` stays. Files in sub-folders move before top-level ones (an index file such as
    ``pipeline.json`` lands last). On any exception the temp folder is deleted, ``path`` untouched."""
    path = os.fspath(path)
    tmp = _new_temp_dir(path, prefix)
    try:
        yield tmp
        files = [os.path.relpath(os.path.join(root, f), tmp) for root, _, names in os.walk(tmp) for f in names]
        os.makedirs(path, mode=DIR_MODE, exist_ok=True)
        for rel in sorted(files, key=lambda r: (-r.count(os.sep), r)):
            dest = os.path.join(path, rel)
            os.makedirs(os.path.dirname(dest), mode=DIR_MODE, exist_ok=True)
            os.replace(os.path.join(tmp, rel), dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=temp_prefix(f".{os.path.basename(path)}."), suffix=FILE_SUFFIX)
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

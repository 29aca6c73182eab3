"""Output folders: checked before any work, written atomically, and never at the cost of a user's files.

Everything goes to a hidden temp folder beside the target, which is renamed onto the target only
when every file is written. A failed or interrupted run leaves nothing behind (no half-written
output folder, no stray temp folder; a killed run's temp folder is swept by the next run,
:func:`trellis_ext.atomic.sweep_stale_temps`).

``check_output_dir`` runs *before* the expensive work and refuses, with a one-line
:class:`InputError`:

- a symbolic link, a file, or a name too long for the file system;
- the current folder, the home folder, the file-system root, or any folder holding one of them;
- any protected path (the input clip, the model folder, the mask folder) or a folder holding one;
- a non-empty folder, unless ``overwrite``; and even then only a previous ss4d output: its manifest
  (``result.json`` by ``ss4d-generate``, or ``report.json`` by ``ss4d-eval benchmark``; :data:`MANIFESTS`)
  says which program wrote it, and every file in it is one that manifest lists (a file the user added
  there makes it refused, so nothing of theirs is ever deleted).

It probes writability by really creating and removing a temp folder (which also works for root,
where permission bits say nothing).
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from trellis_ext.atomic import atomic_directory, sweep_stale_temps, temp_name

from ..errors import InputError

__all__ = ["check_output_dir", "OutputFolder", "foreign_files", "PRODUCER", "RESULT_JSON", "BENCHMARK_PRODUCER",
           "BENCHMARK_REPORT"]

PathLike = Union[str, os.PathLike]
#: The program that writes output folders (``result.json``'s ``command[0]``).
PRODUCER = "ss4d-generate"
RESULT_JSON = "result.json"
#: ``ss4d-eval benchmark``'s report folder: its ``report.json`` names the command and lists the folder's files.
BENCHMARK_PRODUCER = "ss4d-eval"
BENCHMARK_REPORT = "report.json"
#: (manifest file, the ``command[0]`` it must name): what marks a folder as an ss4d output ``--overwrite`` may replace
MANIFESTS = ((RESULT_JSON, PRODUCER), (BENCHMARK_REPORT, BENCHMARK_PRODUCER))
#: File-name length limit when the file system does not say (Linux NAME_MAX).
DEFAULT_NAME_MAX = 255
#: Foreign files named in a refusal (the rest are counted).
LISTED_FILES = 3
OVERWRITE_HINT = "choose a new folder with -o (--overwrite only replaces a previous ss4d output)"


def _temp_prefix(name: str) -> str:
    return f".{name}.tmp-"


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    return p


def _contains(folder: str, path: str) -> bool:
    """``folder`` is ``path`` or one of its ancestors (both real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _listed_files(result: dict, manifest: str, producer: str) -> Optional[set]:
    """Relative paths an ss4d manifest (``result.json``, a benchmark's ``report.json``) says its folder holds
    (None: not written by ``producer``). ``files``: a list of paths, or a dict of such lists."""
    command = result.get("command") if isinstance(result, dict) else None
    if not (isinstance(command, list) and command and command[0] == producer):
        return None
    listed = {manifest}
    files = result.get("files") or {}
    for paths in (files.values() if isinstance(files, dict) else [files]):
        listed.update(os.path.normpath(p) for p in paths if isinstance(p, str))
    for info in (result.get("renders") or {}).values():
        listed.update(os.path.normpath(info[k]) for k in ("file", "preview") if isinstance(info.get(k), str))
    return listed


def foreign_files(folder: PathLike) -> Optional[List[str]]:
    """Files (relative paths) in ``folder`` that a previous ss4d run did not write, sorted; ``None``
    when the folder is not an ss4d output at all (no readable manifest of :data:`MANIFESTS`).
    Symbolic links always count as foreign."""
    folder = Path(folder)
    listed = None
    for manifest, producer in MANIFESTS:
        try:
            listed = _listed_files(json.loads((folder / manifest).read_text(encoding="utf-8")), manifest, producer)
        except (OSError, ValueError):
            continue
        if listed is not None:
            break
    if listed is None:
        return None
    found = []
    for root, dirs, names in os.walk(folder):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = os.path.relpath(os.path.join(root, name), folder)
            if rel not in listed or os.path.islink(os.path.join(root, name)):
                found.append(rel)
    return sorted(found)


def _refuse_protected(out: Path, protected: Iterable[Tuple[str, PathLike]]) -> None:
    real = os.path.realpath(out)
    places = [("the current folder", os.getcwd()), ("your home folder", os.path.expanduser("~")),
              ("the file-system root", os.sep)]
    places += [(label, os.fspath(p)) for label, p in protected if p is not None and os.path.exists(p)]
    for label, place in places:
        if _contains(real, os.path.realpath(place)):
            what = "is" if real == os.path.realpath(place) else "contains"
            raise InputError(f"output folder {out} {what} {label} ({place}); ss4d will not write there",
                             "choose a new folder for the results with -o, e.g. -o outputs/run1")


def _check_name_length(out: Path, base: Path) -> None:
    try:
        name_max = os.pathconf(base, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = DEFAULT_NAME_MAX
    longest = max(len(os.fsencode(out.name)), len(os.fsencode(temp_name(_temp_prefix(out.name)))))
    if longest > name_max:
        raise InputError(f"output folder name {out.name[:40]}... is too long ({len(os.fsencode(out.name))} bytes; "
                         f"this file system allows {name_max} including ss4d's temporary suffix)",
                         "choose a shorter name with -o")


def _check_replaceable(out: Path) -> None:
    foreign = foreign_files(out)
    if foreign is None:
        manifests = " or ".join(f"{m} written by {p}" for m, p in MANIFESTS)
        raise InputError(f"output folder {out} is not empty and is not an ss4d output (no {manifests}); "
                         "it was left untouched", OVERWRITE_HINT)
    if foreign:
        more = f" and {len(foreign) - LISTED_FILES} more" if len(foreign) > LISTED_FILES else ""
        raise InputError(f"output folder {out} holds files ss4d did not write ({', '.join(foreign[:LISTED_FILES])}"
                         f"{more}); it was left untouched", "move them out first, or " + OVERWRITE_HINT)


def check_output_dir(path: PathLike, overwrite: bool = False,
                     protected: Sequence[Tuple[str, Optional[PathLike]]] = ()) -> Path:
    """Validate the destination folder (see the module docstring); raise :class:`InputError`
    saying what to do. ``protected``: ``(label, path)`` pairs the output must not be or contain."""
    out = Path(os.path.abspath(os.fspath(path)))
    if out.is_symlink():
        raise InputError(f"output path {out} is a symbolic link (to {os.readlink(out)})",
                         "give the real folder with -o, or a new folder name")
    _refuse_protected(out, protected)
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is a file", "choose a folder path with -o")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"output folder {out} already exists and is not empty",
                             "pass --overwrite to replace a previous ss4d output, or choose another folder with -o")
        _check_replaceable(out)
    base = _nearest_existing(out.parent)
    if not base.is_dir():
        raise InputError(f"cannot create output folder {out}: {base} is a file, not a folder",
                         "choose a writable folder with -o")
    _check_name_length(out, base)
    sweep_stale_temps(base)  # a killed earlier run's temp folder, before this run starts
    probe = base / temp_name(".ss4d-write-probe-")
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        raise InputError(f"cannot write to {base} ({e.strerror or e})",
                         "choose a writable folder with -o") from None
    return out


class OutputFolder:
    """``with OutputFolder(path, overwrite, protected) as tmp:`` write into ``tmp``; on success
    ``tmp`` becomes ``path`` (replacing a previous ss4d output only when ``overwrite``); on an
    exception it is removed (:func:`trellis_ext.atomic.atomic_directory`). The checks of
    :func:`check_output_dir` run again just before the rename (the folder may have changed)."""

    def __init__(self, path: PathLike, overwrite: bool = False,
                 protected: Sequence[Tuple[str, Optional[PathLike]]] = ()):
        self.protected = list(protected)
        self.path = check_output_dir(path, overwrite, self.protected)
        self.overwrite = overwrite
        self._writer = None

    @contextlib.contextmanager
    def _write(self) -> Iterator[Path]:
        with atomic_directory(str(self.path), prefix=_temp_prefix(self.path.name)) as tmp:
            yield Path(tmp)
            if not self.overwrite and self.path.is_dir() and any(self.path.iterdir()):
                raise InputError(f"output folder {self.path} appeared while running",
                                 "pass --overwrite or choose another folder with -o")
            check_output_dir(self.path, self.overwrite, self.protected)

    def __enter__(self) -> Path:
        self._writer = self._write()
        return self._writer.__enter__()

    def __exit__(self, exc_type, exc, tb) -> bool:
        return self._writer.__exit__(exc_type, exc, tb)

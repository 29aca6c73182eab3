"""Many videos with one model load: ``ss4d-generate --batch FOLDER|LIST.txt``.

* :func:`batch_items` -- the inputs of a batch: a folder's videos, GIFs and frame sub-folders (sorted
  by name; hidden entries skipped), or a text file with one input path per line (blank lines and
  ``#`` comments skipped; relative paths are relative to the list file's folder).
* :func:`output_names` -- one output sub-folder name per item (the input's stem, ``_2``, ``_3``, ...
  for repeats).
* :func:`run_batch` -- runs ``generate(item, out_dir)`` for every item; an item's
  :class:`~ss4d.errors.InputError` / :class:`~ss4d.errors.GenerationError` / other exception is
  recorded and the next item runs (a broken model folder, :class:`~ss4d.errors.ModelFolderError`,
  stops the batch: every item would fail the same way; so do Ctrl-C and SIGTERM). Returns a
  :class:`BatchSummary` with items/hour.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List

from .errors import GenerationError, InputError, ModelFolderError
from .io.video import GIF_EXTENSIONS, VIDEO_EXTENSIONS

__all__ = ["batch_items", "output_names", "run_batch", "BatchSummary", "LIST_EXTENSIONS", "SECONDS_PER_HOUR"]

#: Files read as a list of inputs.
LIST_EXTENSIONS = (".txt", ".lst")
SECONDS_PER_HOUR = 3600.0
COMMENT = "#"


def batch_items(source: str) -> List[str]:
    """The input paths of a batch (see the module docstring). Raises :class:`InputError` when
    ``source`` is missing, not a folder / list file, or lists nothing."""
    path = Path(source)
    if not path.exists():
        raise InputError(f"batch input not found: {source}", "give a folder of videos or a .txt list of inputs")
    if path.is_dir():
        items = [str(p) for p in sorted(path.iterdir()) if not p.name.startswith(".")
                 and (p.is_dir() or p.suffix.lower() in VIDEO_EXTENSIONS + GIF_EXTENSIONS)]
        what = "no videos, GIFs or frame folders"
    elif path.suffix.lower() in LIST_EXTENSIONS:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read the batch list {source} ({e})", "a UTF-8 text file, one path a line") from None
        base = path.parent
        items = [str(base / s) if not os.path.isabs(s) else s
                 for s in (line.strip() for line in lines) if s and not s.startswith(COMMENT)]
        what = "no input paths"
    else:
        raise InputError(f"--batch needs a folder or a list file ({', '.join(LIST_EXTENSIONS)}), got {source}",
                         "e.g. ss4d-generate --batch clips/ -o outputs/")
    if not items:
        raise InputError(f"the batch {source} holds {what}", "add inputs or check the path")
    return items


def output_names(items: List[str]) -> List[str]:
    """One distinct folder name per item: the input's stem, then ``stem_2``, ``stem_3``, ..."""
    seen: Dict[str, int] = {}
    names = []
    for item in items:
        stem = Path(os.path.normpath(item)).stem or "item"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return names


@dataclass
class BatchSummary:
    """What a batch did: per item ``{"input", "output", "status" ("ok"|"failed"), "seconds", "error"}``."""

    items: List[Dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return sum(r["status"] != "ok" for r in self.items)

    @property
    def done(self) -> int:
        return len(self.items) - self.failed

    @property
    def items_per_hour(self) -> float:
        """Successful items per hour of wall time (the model load included)."""
        return self.done * SECONDS_PER_HOUR / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> Dict[str, Any]:
        return {"done": self.done, "failed": self.failed, "seconds": round(self.seconds, 3),
                "items_per_hour": round(self.items_per_hour, 2), "items": self.items}


def run_batch(items: List[str], out_root: str, generate: Callable[[str, str], None],
              log: Callable[[str], None] = print) -> BatchSummary:
    """``generate(item, out_dir)`` for every item, failures isolated (see the module docstring)."""
    summary = BatchSummary()
    t_start = time.perf_counter()
    for i, (item, name) in enumerate(zip(items, output_names(items)), 1):
        out_dir = os.path.join(out_root, name)
        t0 = time.perf_counter()
        record = {"input": item, "output": out_dir, "status": "ok", "error": None}
        try:
            generate(item, out_dir)
        except ModelFolderError:
            raise
        except (InputError, GenerationError) as e:
            record.update(status="failed", error=str(e))
        except Exception as e:  # noqa: BLE001  (one item's bug must not stop the others)
            record.update(status="failed", error=f"internal error: {type(e).__name__}: {' '.join(str(e).split())}")
        record["seconds"] = round(time.perf_counter() - t0, 3)
        summary.items.append(record)
        summary.seconds = time.perf_counter() - t_start
        state = "ok" if record["status"] == "ok" else f"FAILED: {record['error']}"
        log(f"[{i}/{len(items)}] {item}: {state} ({record['seconds']:.1f} s; {summary.items_per_hour:.1f} items/hour)")
    return summary

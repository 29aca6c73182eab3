"""Which model folder runs when none is named (``ss4d-generate`` without ``--model``,
``Pipeline.from_pretrained()`` without a path, ``make demo``).

In order:

1. the folder named explicitly (``--model`` / the ``path`` argument);
2. ``$SS4D_MODEL``;
3. the official SS4D weights at ``checkpoints/SS4D`` (of the working directory, else of this checkout)
   when that folder exists;
4. the small SS4D trained here and shipped in the repository, ``checkpoints/ss4d-small``
   (``checkpoints/ss4d-small/README.md``: what it can and cannot do).

A named folder (1, 2) is used as given, also when it is missing (the loader then says so); without
any of 3-4 the official location is returned so the error names where the weights belong.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple

__all__ = ["resolve_model", "NOTHING_FOUND", "MODEL_ENV", "OFFICIAL_DIR", "SMALL_MODEL_DIR", "SMALL_MODEL_LABEL"]

REPO = Path(__file__).resolve().parents[1]
MODEL_ENV = "SS4D_MODEL"
OFFICIAL_DIR = os.path.join("checkpoints", "SS4D")
SMALL_MODEL_DIR = REPO / "checkpoints" / "ss4d-small"
SMALL_MODEL_LABEL = "the small SS4D trained by ss4d, not the released model"
PIPELINE_FILE = "pipeline.json"
NOTHING_FOUND = "the default"    # how: no folder was named or found (the official location is returned)


def _is_model(folder: Path) -> bool:
    return (folder / PIPELINE_FILE).is_file()


def resolve_model(explicit: Optional[str | os.PathLike] = None) -> Tuple[str, str]:
    """(folder, how it was chosen) following the module docstring's order."""
    if explicit is not None:
        return os.fspath(explicit), "--model"
    if os.environ.get(MODEL_ENV):
        return os.environ[MODEL_ENV], f"${MODEL_ENV}"
    for official in (Path(OFFICIAL_DIR), REPO / OFFICIAL_DIR):
        if official.is_dir():
            return str(official), "the official SS4D folder"
    if _is_model(SMALL_MODEL_DIR):
        return str(SMALL_MODEL_DIR), SMALL_MODEL_LABEL
    return OFFICIAL_DIR, NOTHING_FOUND

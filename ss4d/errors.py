"""User-facing errors of the video-to-4D path.

``InputError`` is every problem the user can fix (a missing or unreadable video, an empty mask, a
bad flag, a missing or wrong model folder): the CLI prints its message on one line and exits with
code 2. Its message always says what is wrong *and* what to do. ``GenerationError`` is a run that
went through but produced nothing usable (e.g. a frame with an empty structure): exit code 1.
"""
from __future__ import annotations

from typing import Optional

__all__ = ["InputError", "ModelFolderError", "GenerationError", "MissingWeightsError"]


class InputError(ValueError):
    """Bad input the user can fix. ``str(e)`` = ``"<problem>: <what to do>"`` on one line."""

    def __init__(self, problem: str, hint: Optional[str] = None):
        self.problem = problem
        self.hint = hint
        super().__init__(f"{problem}; {hint}" if hint else problem)


class ModelFolderError(InputError):
    """The model folder is missing or is not an SS4D pipeline folder."""


class GenerationError(RuntimeError):
    """The pipeline ran but its output is unusable (message says which stage and what to try)."""


class MissingWeightsError(InputError):
    """Pretrained weights a metric or loss needs (LPIPS backbone, CLIP, I3D) are not on disk.

    The message names the file looked for, the flag / environment variable that points to it, and
    the documented layout (``docs/evaluation.md``, "Weights")."""

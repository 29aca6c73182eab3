"""User-facing errors of the video-to-4D path.

``InputError`` is every problem the user can fix (a missing or unreadable video, an empty mask, a
bad flag, a missing or wrong model folder): the CLI prints its message on one line and exits with
code 2. Its message always says what is wrong *and* what to do. ``GenerationError`` is a run that
went through but produced nothing usable (e.g. a frame with an empty structure, non-finite values):
exit code 1. Both take ``(problem, hint)`` and print as ``"<problem>; <hint>"``.
"""
from __future__ import annotations

from typing import Optional

__all__ = ["InputError", "ModelFolderError", "GenerationError"]


class _Hinted:
    """``str(e)`` = ``"<problem>; <what to do>"`` on one line."""

    def __init__(self, problem: str, hint: Optional[str] = None):
        self.problem = problem
        self.hint = hint
        super().__init__(f"{problem}; {hint}" if hint else problem)


class InputError(_Hinted, ValueError):
    """Bad input the user can fix."""


class ModelFolderError(InputError):
    """The model folder is missing, is not an SS4D pipeline folder, or holds unusable weights."""


class GenerationError(_Hinted, RuntimeError):
    """The pipeline ran but its output is unusable (message says which stage and what to try)."""

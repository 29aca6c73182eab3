"""Training errors. ``TrainingInputError`` (a user-fixable problem: config, dataset, init folder) -> the
CLI prints one line and exits 2; ``TrainingStopped`` (the run itself failed, e.g. a non-finite loss)
-> one line naming the step and the last good checkpoint, exit 1."""
from __future__ import annotations

from ..errors import InputError

__all__ = ["TrainingInputError", "TrainingStopped"]


class TrainingInputError(InputError):
    """Bad config, dataset or init folder (``str(e)`` = ``"<problem>; <what to do>"``)."""


class TrainingStopped(RuntimeError):
    """The run stopped (non-finite loss ...); the message names the step and the last good checkpoint."""

"""Learning-rate schedule of a training run (``trainer.lr_schedule``): a pure function of the optimizer step.

``lr(s) = trainer.lr · factor(s)`` for optimizer step ``s`` (0-based) of a run of ``total`` steps (the sum of
its progressive phases):

* ``warmup_steps`` ``W`` [0]: ``factor = (s + 1) / W`` for ``s < W`` (a linear ramp ending at 1);
* ``decay`` [``constant``]: after the warm-up, ``constant`` keeps 1; ``linear`` and ``cosine`` go from 1 at step
  ``W`` to ``final_ratio`` [0] at the last step ``total - 1`` (half a cosine period for ``cosine``); a run with
  no step after ``W`` keeps 1.

Absent (the default), the run keeps ``trainer.lr`` at every step, as TRELLIS's trainers do, and its config hash is
the one it had before schedules existed, so older runs resume. The loop sets the rate on every parameter group
before each optimizer step from the step alone: no scheduler object is stepped (a prepared Accelerate scheduler
steps once per process per call), nothing is added to a checkpoint, and a resumed run continues with exactly
the rate it would have had. A run continued with more steps (``--allow-config-change``) recomputes the schedule
over its new total.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

__all__ = ["LRSchedule", "DECAYS"]

DECAYS = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class LRSchedule:
    warmup_steps: int = 0
    decay: str = "constant"
    final_ratio: float = 0.0

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]], source: str = "config") -> "LRSchedule":
        from .errors import TrainingInputError

        d = dict(d or {})
        hint = ('use {"warmup_steps": W >= 0, "decay": "constant" | "linear" | "cosine", '
                '"final_ratio": r in [0, 1]}')
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise TrainingInputError(f"{source}: trainer.lr_schedule has unknown keys {unknown}", hint)
        try:
            s = cls(warmup_steps=int(d.get("warmup_steps", 0)), decay=str(d.get("decay", "constant")),
                    final_ratio=float(d.get("final_ratio", 0.0)))
        except (TypeError, ValueError):
            raise TrainingInputError(f"{source}: bad trainer.lr_schedule {d}", hint) from None
        if s.warmup_steps < 0 or s.decay not in DECAYS or not 0.0 <= s.final_ratio <= 1.0:
            raise TrainingInputError(f"{source}: bad trainer.lr_schedule {d}", hint)
        return s

    def factor(self, step: int, total: int) -> float:
        """Multiplier of ``trainer.lr`` at optimizer step ``step`` (0-based) of a ``total``-step run."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay == "constant":
            return 1.0
        span = total - 1 - self.warmup_steps
        if span <= 0:                       # no step after the warm-up's last to decay over
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / span)
        shape = 1.0 - progress if self.decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.final_ratio + (1.0 - self.final_ratio) * shape

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

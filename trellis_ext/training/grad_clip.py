"""TRELLIS's adaptive gradient clipping: the threshold is a percentile of recent finite gradient norms,
capped at ``max_norm``.

Per optimizer step: ``threshold()`` -> clip to it (``accelerator.clip_grad_norm_``, which also works
under FSDP) -> ``record(norm)`` with the pre-clip norm it returned. Before any norm is recorded the
threshold is ``max_norm``. Non-finite norms are not recorded. The state is checkpointable.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np

__all__ = ["AdaptiveGradClipper", "DEFAULT_MAX_NORM", "DEFAULT_PERCENTILE", "DEFAULT_BUFFER"]

DEFAULT_MAX_NORM = 1.0
DEFAULT_PERCENTILE = 95.0
DEFAULT_BUFFER = 1000


class AdaptiveGradClipper:
    def __init__(self, max_norm: float = DEFAULT_MAX_NORM, percentile: float = DEFAULT_PERCENTILE,
                 buffer_size: int = DEFAULT_BUFFER):
        if max_norm <= 0 or not 0 < percentile <= 100 or buffer_size < 1:
            raise ValueError(f"bad clipper settings: max_norm={max_norm}, percentile={percentile}, "
                             f"buffer_size={buffer_size}")
        self.max_norm, self.percentile, self.buffer_size = float(max_norm), float(percentile), int(buffer_size)
        self.norms: deque = deque(maxlen=self.buffer_size)

    def threshold(self) -> float:
        if not self.norms:
            return self.max_norm
        return min(self.max_norm, float(np.percentile(np.asarray(self.norms, dtype=np.float64), self.percentile)))

    def record(self, norm: float) -> None:
        norm = float(norm)
        if math.isfinite(norm):
            self.norms.append(norm)

    def state_dict(self) -> dict:
        return {"max_norm": self.max_norm, "percentile": self.percentile, "buffer_size": self.buffer_size,
                "norms": list(self.norms)}

    def load_state_dict(self, state: dict) -> None:
        self.max_norm, self.percentile = float(state["max_norm"]), float(state["percentile"])
        self.buffer_size = int(state["buffer_size"])
        self.norms = deque((float(x) for x in state["norms"]), maxlen=self.buffer_size)

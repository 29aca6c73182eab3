"""Low-VRAM stage offload: only the running stage's model sits on the accelerator.

``Pipeline.enable_low_vram(device)`` keeps every model (and the condition encoder) in CPU memory
and moves one model at a time to ``device`` for the stage that uses it (:meth:`StageOffload.stage`),
back to the CPU after it, releasing the accelerator's cached blocks. With the released models the
two flow trunks dominate the weights, so at most one of them is resident at a time.

The other low-VRAM settings (applied by the pipeline while offload is on): sequential CFG
(:data:`LOW_VRAM_SAMPLER_PARAMS`: one pass of the model at a time instead of a batch of two) and
the structure decoder run one frame at a time (:data:`LOW_VRAM_DECODE_CHUNK`). Every one of these
computes the same numbers as the default path; only where the weights wait between stages changes.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Set

import torch
from torch import nn

__all__ = ["StageOffload", "LOW_VRAM_SAMPLER_PARAMS", "LOW_VRAM_DECODE_CHUNK", "HOME_DEVICE"]

#: Where models wait between stages.
HOME_DEVICE = torch.device("cpu")
#: Sampler parameters forced in low-VRAM mode.
LOW_VRAM_SAMPLER_PARAMS = {"cfg_mode": "sequential"}
#: Frames per structure-decoder call in low-VRAM mode.
LOW_VRAM_DECODE_CHUNK = 1


class StageOffload:
    """Moves one stage's modules to ``device`` for the duration of the stage.

    Attributes:
        device: the compute device.
        resident: the modules currently on ``device`` (for checks and tests).
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.resident: Set[int] = set()

    def park(self, *modules: nn.Module) -> None:
        """Move ``modules`` to :data:`HOME_DEVICE`."""
        for m in modules:
            m.to(HOME_DEVICE)
            self.resident.discard(id(m))

    @contextlib.contextmanager
    def stage(self, *modules: nn.Module) -> Iterator[None]:
        """``modules`` on the compute device inside the block, parked again after it."""
        for m in modules:
            m.to(self.device)
            self.resident.add(id(m))
        try:
            yield
        finally:
            self.park(*modules)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

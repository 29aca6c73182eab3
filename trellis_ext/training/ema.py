"""Exponential moving averages of a model's parameters (TRELLIS: rate 0.9999, every optimizer step).

``EMA(model, rates)`` copies the model's current parameters (so an EMA of an inflated or fine-tuned
model starts from those weights, not from a random init — TRELLIS's ``finetune_from`` bug), in float32.
``update(model)`` after each optimizer step that was not skipped: ``ema = rate·ema + (1 - rate)·param``.
Buffers are not averaged. ``state_dict()`` / ``load_state_dict()`` make it checkpointable (Accelerate's
``register_for_checkpointing``).
"""
from __future__ import annotations

from typing import Dict, Iterable, Sequence

import torch
from torch import nn

__all__ = ["EMA", "DEFAULT_EMA_RATES"]

DEFAULT_EMA_RATES = (0.9999,)


def _rate_key(rate: float) -> str:
    return f"{rate:g}"


class EMA:
    """float32 shadow copies of the trainable parameters, one set per rate."""

    def __init__(self, model: nn.Module, rates: Sequence[float] = DEFAULT_EMA_RATES):
        if not rates:
            raise ValueError("EMA needs at least one rate")
        for r in rates:
            if not 0.0 <= r < 1.0:
                raise ValueError(f"EMA rates must be in [0, 1), got {r}")
        self.rates = [float(r) for r in rates]
        params = self._named(model)
        self.shadow: Dict[str, Dict[str, torch.Tensor]] = {
            _rate_key(r): {k: p.detach().float().clone() for k, p in params} for r in self.rates}

    @staticmethod
    def _named(model: nn.Module) -> Iterable:
        return [(k, p) for k, p in model.named_parameters() if p.requires_grad]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = dict(self._named(model))
        for r in self.rates:
            for k, s in self.shadow[_rate_key(r)].items():
                s.mul_(r).add_(params[k].detach().float(), alpha=1.0 - r)

    def state_dict_for(self, model: nn.Module, rate: float) -> Dict[str, torch.Tensor]:
        """``model.state_dict()`` with the trainable parameters replaced by the EMA of ``rate``
        (in each parameter's dtype): what an exported EMA checkpoint holds."""
        sd = model.state_dict()
        for k, v in self.shadow[_rate_key(rate)].items():
            sd[k] = v.to(sd[k].dtype)
        return sd

    def state_dict(self) -> dict:
        return {"rates": list(self.rates), "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        if [float(r) for r in state["rates"]] != self.rates:
            raise ValueError(f"EMA rates differ: checkpoint {state['rates']}, run {self.rates}")
        for key, tensors in state["shadow"].items():
            mine = self.shadow[key]
            if set(tensors) != set(mine):
                raise ValueError("EMA parameters differ from the model's")
            for k, v in tensors.items():
                mine[k].copy_(v)

"""1D rotary position embedding over the frame index ("RoPE-t").

Each head's q/k channels are taken as D/2 complex numbers (interleaved pairs (2i, 2i+1)) and
multiplied by e^{i·p·ω_i} with ω_i = base^(-i/(D/2)), i = 0..D/2-1: every head dim is rotated,
v is untouched, all heads share the phases. SS4D applies it *before* the q/k RMS norm.
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["TemporalRoPE", "apply_rotary"]

DEFAULT_BASE = 10000.0


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, base: float = DEFAULT_BASE) -> torch.Tensor:
    """Rotate ``x`` [..., H, D] by positions [...] (broadcast over heads). Computed in fp32."""
    head_dim = x.shape[-1]
    if head_dim % 2:
        raise ValueError(f"rotary embedding needs an even head dim, got {head_dim}")
    half = head_dim // 2
    freqs = 1.0 / (base ** (torch.arange(half, device=x.device, dtype=torch.float32) / half))
    phases = positions.to(torch.float32)[..., None] * freqs                       # [..., D/2]
    rot = torch.polar(torch.ones_like(phases), phases)[..., None, :]             # [..., 1, D/2]
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], half, 2))
    return torch.view_as_real(xc * rot).reshape(x.shape).to(x.dtype)


class TemporalRoPE(nn.Module):
    """Parameter-free module form of ``apply_rotary`` (no state-dict entries)."""

    def __init__(self, base: float = DEFAULT_BASE):
        super().__init__()
        self.base = base

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor):
        return apply_rotary(q, positions, self.base), apply_rotary(k, positions, self.base)

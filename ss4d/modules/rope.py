"""1D rotary position embedding over the frame index ("RoPE-t").

Each head's q/k channels are taken as D/2 complex numbers (interleaved pairs (2i, 2i+1)) and
multiplied by e^{i·p·ω_i} with ω_i = base^(-i/(D/2)), i = 0..D/2-1: every head dim is rotated,
v is untouched, all heads share the phases. SS4D applies it *before* the q/k RMS norm.
"""
from __future__ import annotations

import torch

__all__ = ["apply_rotary", "apply_rotary_qk", "DEFAULT_BASE", "ROPE_T_MODE", "PE_MODES_4D"]

DEFAULT_BASE = 10000.0
#: ``pe_mode`` of the 4D models that adds RoPE-t (on top of TRELLIS's 3D APE, which every 4D mode keeps).
ROPE_T_MODE = "rope_t"
#: ``pe_mode`` values the 4D models accept: "ape" (3D APE only) and "rope_t" (3D APE + RoPE-t).
PE_MODES_4D = ("ape", ROPE_T_MODE)


def _rotation(positions: torch.Tensor, head_dim: int, base: float, device) -> torch.Tensor:
    """e^{i·p·ω} for positions [...] -> complex [..., 1, D/2] (broadcast over heads), fp32."""
    if head_dim % 2:
        raise ValueError(f"rotary embedding needs an even head dim, got {head_dim}")
    half = head_dim // 2
    freqs = 1.0 / (base ** (torch.arange(half, device=device, dtype=torch.float32) / half))
    phases = positions.to(device=device, dtype=torch.float32)[..., None] * freqs      # [..., D/2]
    return torch.polar(torch.ones_like(phases), phases)[..., None, :]                 # [..., 1, D/2]


def _rotate(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], x.shape[-1] // 2, 2))
    return torch.view_as_real(xc * rot).reshape(x.shape).to(x.dtype)


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, base: float = DEFAULT_BASE) -> torch.Tensor:
    """Rotate ``x`` [..., H, D] by positions [...] (broadcast over heads). Computed in fp32."""
    return _rotate(x, _rotation(positions, x.shape[-1], base, x.device))


def apply_rotary_qk(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, base: float = DEFAULT_BASE):
    """``(apply_rotary(q, positions, base), apply_rotary(k, positions, base))`` with the rotation computed
    once (q and k share the head dim and the positions)."""
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k head dims differ: {q.shape[-1]} vs {k.shape[-1]}")
    rot = _rotation(positions, q.shape[-1], base, q.device)
    return _rotate(q, rot), _rotate(k, rot)

"""Parameter-free sinusoidal position embedding and the diffusion timestep embedder (TRELLIS layouts).

``AbsolutePositionEmbedder(channels, in_channels=3)``
    freq_dim = channels // in_channels // 2, freqs_i = 1 / 10000^(i / freq_dim), i < freq_dim.
    For an integer position p on each axis: [sin(p·freqs), cos(p·freqs)] (**sin first**), the axes'
    blocks concatenated in column order, zero-padded to ``channels``
    (C = 768: 3·2·128 = 768 exactly; C = 1024: 3·2·170 = 1020 + 4 zeros).

``TimestepEmbedder(hidden_size, frequency_embedding_size=256)``
    half = F / 2, freqs_i = exp(-ln(10000) · i / half); emb = [cos(t·freqs), sin(t·freqs)] (**cos first**),
    then ``mlp`` = Linear(F -> C), SiLU, Linear(C -> C) (keys ``mlp.0``, ``mlp.2``). Timesteps are given
    on TRELLIS's 0..1000 scale (the samplers pass 1000·t).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

__all__ = ["AbsolutePositionEmbedder", "TimestepEmbedder", "timestep_embedding", "sincos_frequencies",
           "sincos_grid_2d"]

#: Base of the geometric frequency ladders.
SINUSOID_BASE = 10000.0
#: Default width of the timestep sinusoid.
TIMESTEP_FREQ_DIM = 256


def sincos_frequencies(freq_dim: int, base: float = SINUSOID_BASE, device=None) -> torch.Tensor:
    """[freq_dim] fp32: 1 / base^(i / freq_dim)."""
    i = torch.arange(freq_dim, dtype=torch.float32, device=device)
    return 1.0 / (base ** (i / freq_dim))


class AbsolutePositionEmbedder(nn.Module):
    """Sinusoidal embedding of integer coordinates (no parameters, nothing in the state dict).

    Args:
        channels: output width C.
        in_channels: number of coordinate columns (3 for x, y, z).

    Shapes: forward(coords [N, in_channels]) -> [N, C] fp32.
    """

    def __init__(self, channels: int, in_channels: int = 3):
        super().__init__()
        self.channels = channels
        self.in_channels = in_channels
        self.freq_dim = channels // in_channels // 2
        if self.freq_dim == 0:
            raise ValueError(f"channels={channels} too small for {in_channels} coordinate columns")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, d = x.shape
        if d != self.in_channels:
            raise ValueError(f"expected [N, {self.in_channels}] coordinates; got {tuple(x.shape)}")
        freqs = sincos_frequencies(self.freq_dim, device=x.device)
        angles = x.float()[:, :, None] * freqs  # [N, d, F]
        emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(n, -1)  # axis-major
        pad = self.channels - emb.shape[1]
        if pad > 0:
            emb = torch.cat([emb, emb.new_zeros(n, pad)], dim=-1)
        return emb


def sincos_grid_2d(side: int, channels: int, base: float = SINUSOID_BASE) -> torch.Tensor:
    """Fixed 2D sinusoidal table of a ``side`` x ``side`` patch grid, row-major: [side², channels] fp32.

    Half the channels encode the row, half the column: ``[sin(r·f), cos(r·f), sin(c·f), cos(c·f)]`` with
    ``f = sincos_frequencies(channels // 4, base)`` (each (sin, cos) pair has norm 1, so a row has norm
    sqrt(channels / 2)); ``channels`` must be a multiple of 4. Neighbouring patches get similar vectors.
    """
    if channels % 4 or channels <= 0:
        raise ValueError(f"channels must be a positive multiple of 4, got {channels}")
    freqs = sincos_frequencies(channels // 4, base)
    pos = torch.arange(side, dtype=torch.float32)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")
    parts = []
    for axis in (rows.reshape(-1), cols.reshape(-1)):
        angles = axis[:, None] * freqs[None]
        parts += [torch.sin(angles), torch.cos(angles)]
    return torch.cat(parts, dim=-1)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = SINUSOID_BASE) -> torch.Tensor:
    """[B] timesteps -> [B, dim] fp32 sinusoid, [cos | sin] halves (an odd dim gets a zero column)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, emb.new_zeros(emb.shape[0], 1)], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Timestep -> vector: sinusoid (``frequency_embedding_size``) then a 2-layer SiLU MLP.

    Shapes: forward(t [B]) -> [B, hidden_size] (dtype of the MLP weights).
    """

    def __init__(self, hidden_size: int, frequency_embedding_size: int = TIMESTEP_FREQ_DIM):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))

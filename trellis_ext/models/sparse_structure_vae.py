"""Dense 3D-conv VAE of occupancy grids (TRELLIS's SS VAE): 64³ occupancy <-> 16³×8 latents.

Encoder: ``input_layer`` conv -> ``blocks`` (res blocks; a k2/s2 conv halves the grid between
resolution levels) -> ``middle_block`` -> ``out_layer`` [ChannelLN, SiLU, conv] -> mean | logvar.
Decoder: ``input_layer`` -> ``middle_block`` -> ``blocks`` (res blocks; conv + 3D pixel shuffle
doubles the grid) -> ``out_layer`` -> occupancy logits (occupied iff logit > 0).
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules.norm import ChannelLayerNorm32, GroupNorm32
from ..modules.spatial import pixel_shuffle_3d
from .base import TrellisModel, zero_module

__all__ = ["ResBlock3d", "DownsampleBlock3d", "UpsampleBlock3d",
           "SparseStructureEncoder", "SparseStructureDecoder"]

KERNEL = 3
PADDING = 1
SHUFFLE_SCALE = 2          # each up/down level changes the grid by 2 per axis
SUBVOXELS = SHUFFLE_SCALE ** 3
GROUP_NORM_GROUPS = 32


def _norm(norm_type: str, channels: int) -> nn.Module:
    if norm_type == "group":
        return GroupNorm32(GROUP_NORM_GROUPS, channels)
    if norm_type == "layer":
        return ChannelLayerNorm32(channels)
    raise ValueError(f"unknown norm_type {norm_type!r} (expected 'layer' or 'group')")


class ResBlock3d(nn.Module):
    """norm1 -> SiLU -> conv1 -> norm2 -> SiLU -> conv2, plus a skip (1³ conv if channels change).

    x: [B, C, X, Y, Z] -> [B, C_out, X, Y, Z].
    """

    def __init__(self, channels: int, out_channels: int = None, norm_type: str = "layer"):
        super().__init__()
        out_channels = out_channels or channels
        self.norm1 = _norm(norm_type, channels)
        self.norm2 = _norm(norm_type, out_channels)
        self.conv1 = nn.Conv3d(channels, out_channels, KERNEL, padding=PADDING)
        self.conv2 = zero_module(nn.Conv3d(out_channels, out_channels, KERNEL, padding=PADDING))
        self.skip_connection = nn.Conv3d(channels, out_channels, 1) if channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip_connection(x)


class DownsampleBlock3d(nn.Module):
    """Halve the grid with a k=2, s=2 conv (key ``conv``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, SHUFFLE_SCALE, stride=SHUFFLE_SCALE)

    def forward(self, x):
        return self.conv(x)


class UpsampleBlock3d(nn.Module):
    """Double the grid: conv to ``out·8`` channels, then 3D pixel shuffle (key ``conv``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels * SUBVOXELS, KERNEL, padding=PADDING)

    def forward(self, x):
        return pixel_shuffle_3d(self.conv(x), SHUFFLE_SCALE)


class SparseStructureEncoder(TrellisModel):
    """Occupancy [B, in_channels, R, R, R] -> latent [B, latent_channels, R/2^L, ...].

    ``channels`` lists the width of each resolution level (official: [32, 128, 512], 64³ -> 16³).
    """

    TORSO = ("blocks", "middle_block")

    def __init__(self, in_channels: int, latent_channels: int, num_res_blocks: int,
                 channels: Sequence[int], num_res_blocks_middle: int = 2, norm_type: str = "layer",
                 use_fp16: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.input_layer = nn.Conv3d(in_channels, channels[0], KERNEL, padding=PADDING)
        blocks: List[nn.Module] = []
        for i, ch in enumerate(channels):
            blocks += [ResBlock3d(ch, ch, norm_type) for _ in range(num_res_blocks)]
            if i < len(channels) - 1:
                blocks.append(DownsampleBlock3d(ch, channels[i + 1]))
        self.blocks = nn.ModuleList(blocks)
        self.middle_block = nn.Sequential(*[ResBlock3d(channels[-1], channels[-1], norm_type)
                                            for _ in range(num_res_blocks_middle)])
        self.out_layer = nn.Sequential(_norm(norm_type, channels[-1]), nn.SiLU(),
                                       nn.Conv3d(channels[-1], latent_channels * 2, KERNEL, padding=PADDING))
        self._finish_init(use_fp16)

    def forward(self, x: torch.Tensor, sample_posterior: bool = False, return_raw: bool = False):
        """Returns z (the posterior mean unless ``sample_posterior``), or (z, mean, logvar)."""
        h = self.input_layer(x).type(self.dtype)
        for block in self.blocks:
            h = block(h)
        h = self.middle_block(h).type(x.dtype)
        h = self.out_layer(h)
        mean, logvar = h.chunk(2, dim=1)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample_posterior else mean
        return (z, mean, logvar) if return_raw else z


class SparseStructureDecoder(TrellisModel):
    """Latent [B, latent_channels, r, r, r] -> occupancy logits [B, out_channels, r·2^L, ...]."""

    TORSO = ("blocks", "middle_block")

    def __init__(self, out_channels: int, latent_channels: int, num_res_blocks: int,
                 channels: Sequence[int], num_res_blocks_middle: int = 2, norm_type: str = "layer",
                 use_fp16: bool = False):
        super().__init__()
        self.out_channels = out_channels
        self.latent_channels = latent_channels
        self.input_layer = nn.Conv3d(latent_channels, channels[0], KERNEL, padding=PADDING)
        self.middle_block = nn.Sequential(*[ResBlock3d(channels[0], channels[0], norm_type)
                                            for _ in range(num_res_blocks_middle)])
        blocks: List[nn.Module] = []
        for i, ch in enumerate(channels):
            blocks += [ResBlock3d(ch, ch, norm_type) for _ in range(num_res_blocks)]
            if i < len(channels) - 1:
                blocks.append(UpsampleBlock3d(ch, channels[i + 1]))
        self.blocks = nn.ModuleList(blocks)
        self.out_layer = nn.Sequential(_norm(norm_type, channels[-1]), nn.SiLU(),
                                       nn.Conv3d(channels[-1], out_channels, KERNEL, padding=PADDING))
        self._finish_init(use_fp16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input_layer(x).type(self.dtype)
        h = self.middle_block(h)
        for block in self.blocks:
            h = block(h)
        return self.out_layer(h.type(x.dtype))

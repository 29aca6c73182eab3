"""SLat mesh decoder (raw output; mesh extraction with FlexiCubes is not included).

Backbone at 64³ -> two ``SparseSubdivideBlock3d`` (each voxel -> 8 children: 64³ -> 128³ -> 256³;
channels C -> C/4 -> C/8) -> ``out_layer`` [N·64, 101] per fine voxel: sdf 8, deform 8×3,
FlexiCubes weights 21, colour 8×6 (with ``use_color``). ``split_mesh_features`` names the parts.
"""
from __future__ import annotations

from typing import Any, Dict

import torch
import torch.nn as nn

from ...sparse import SparseConv3d, SparseGroupNorm32, SparseLinear, SparseSiLU, SparseSubdivide, SparseTensor
from ..base import zero_module
from .base import SparseTransformerBase, layout_channels, split_channels

__all__ = ["SparseSubdivideBlock3d", "SLatMeshDecoder", "split_mesh_features", "mesh_feature_layout"]

GROUP_NORM_GROUPS = 32
KERNEL = 3
SUBDIVISION_CHANNEL_DIVISORS = (4, 8)   # channels after each subdivide block: C/4, C/8
CUBE_CORNERS = 8
XYZ = 3
FLEXICUBES_WEIGHTS = 21
COLOR_CHANNELS = 6


def mesh_feature_layout(use_color: bool) -> Dict[str, tuple]:
    """Per fine voxel: name -> shape of its slice of the output channels, in order."""
    layout = {"sdf": (CUBE_CORNERS,), "deform": (CUBE_CORNERS, XYZ), "weights": (FLEXICUBES_WEIGHTS,)}
    if use_color:
        layout["color"] = (CUBE_CORNERS, COLOR_CHANNELS)
    return layout


def split_mesh_features(feats: torch.Tensor, use_color: bool) -> Dict[str, torch.Tensor]:
    """[M, C] raw output -> {sdf [M, 8], deform [M, 8, 3], weights [M, 21], color [M, 8, 6]}."""
    return split_channels(feats, mesh_feature_layout(use_color))


class SparseSubdivideBlock3d(nn.Module):
    """GroupNorm + SiLU -> subdivide -> conv -> GroupNorm + SiLU -> conv (zero-init), plus a skip
    (subdivide, then a 1³ conv when channels change). x: [N, C] -> [8N, C_out] at 2× resolution."""

    def __init__(self, channels: int, out_channels: int = None):
        super().__init__()
        out_channels = out_channels or channels
        self.act_layers = nn.Sequential(SparseGroupNorm32(GROUP_NORM_GROUPS, channels), SparseSiLU())
        self.sub = SparseSubdivide()
        self.out_layers = nn.Sequential(
            SparseConv3d(channels, out_channels, KERNEL),
            SparseGroupNorm32(GROUP_NORM_GROUPS, out_channels),
            SparseSiLU(),
            zero_module(SparseConv3d(out_channels, out_channels, KERNEL)),
        )
        self.skip_connection = SparseConv3d(channels, out_channels, 1) if channels != out_channels else nn.Identity()

    def forward(self, x: SparseTensor) -> SparseTensor:
        h = self.out_layers(self.sub(self.act_layers(x)))
        return h + self.skip_connection(self.sub(x))


class SLatMeshDecoder(SparseTransformerBase):
    TORSO = ("blocks", "upsample")

    def __init__(self, resolution: int, model_channels: int, latent_channels: int, num_blocks: int,
                 num_heads: int = None, num_head_channels: int = 64, mlp_ratio: float = 4,
                 attn_mode: str = "swin", window_size: int = 8, pe_mode: str = "ape",
                 use_fp16: bool = False, use_checkpoint: bool = False, qk_rms_norm: bool = False,
                 representation_config: Dict[str, Any] = None):
        super().__init__(latent_channels, model_channels, num_blocks, num_heads, num_head_channels, mlp_ratio,
                         attn_mode, window_size, pe_mode, use_fp16, use_checkpoint, qk_rms_norm)
        self.resolution = resolution
        self.rep_config = representation_config or {}
        self.use_color = bool(self.rep_config.get("use_color", False))
        widths = [model_channels] + [model_channels // d for d in SUBDIVISION_CHANNEL_DIVISORS]
        self.upsample = nn.ModuleList([SparseSubdivideBlock3d(widths[i], widths[i + 1])
                                       for i in range(len(SUBDIVISION_CHANNEL_DIVISORS))])
        self.out_channels = layout_channels(mesh_feature_layout(self.use_color))
        self.out_layer = SparseLinear(widths[-1], self.out_channels)
        self.initialize_weights()
        zero_module(self.out_layer)
        self._finish_init(use_fp16)

    def forward(self, x: SparseTensor, **block_kwargs) -> SparseTensor:
        """Raw output SparseTensor [64·N, out_channels] at 4× the input resolution."""
        h = super().forward(x, **block_kwargs)
        for block in self.upsample:
            h = block(h)
        return self.out_layer(h.type(x.dtype))

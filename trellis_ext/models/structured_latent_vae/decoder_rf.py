"""SLat radiance-field decoder (raw output only).

TRELLIS turns the output into a CUDA-only ``Strivec``; we return the raw per-voxel tensor
[N, rank·3·dim + rank + rank·3] with ``split_radiance_field`` to name its parts.
"""
from __future__ import annotations

from typing import Any, Dict

import torch

from ...sparse import SparseLinear, SparseTensor
from ..base import output_norm, zero_module
from .base import SparseTransformerBase, layout_channels, split_channels

__all__ = ["SLatRadianceFieldDecoder", "split_radiance_field"]

SPATIAL_DIMS = 3
RGB = 3


def _rf_layout(config: Dict[str, Any]):
    rank, dim = config["rank"], config["dim"]
    return {"trivec": (rank, SPATIAL_DIMS, dim), "density": (rank,), "features_dc": (rank, 1, RGB)}


def split_radiance_field(feats: torch.Tensor, config: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """[N, C] raw output -> {trivec [N, rank, 3, dim], density [N, rank], features_dc [N, rank, 1, 3]}."""
    return split_channels(feats, _rf_layout(config))


class SLatRadianceFieldDecoder(SparseTransformerBase):
    def __init__(self, resolution: int, model_channels: int, latent_channels: int, num_blocks: int,
                 num_heads: int = None, num_head_channels: int = 64, mlp_ratio: float = 4,
                 attn_mode: str = "swin", window_size: int = 8, pe_mode: str = "ape",
                 use_fp16: bool = False, use_checkpoint: bool = False, qk_rms_norm: bool = False,
                 representation_config: Dict[str, Any] = None):
        super().__init__(latent_channels, model_channels, num_blocks, num_heads, num_head_channels, mlp_ratio,
                         attn_mode, window_size, pe_mode, use_fp16, use_checkpoint, qk_rms_norm)
        self.resolution = resolution
        self.rep_config = representation_config
        self.out_channels = layout_channels(_rf_layout(representation_config))
        self.out_layer = SparseLinear(model_channels, self.out_channels)
        self.initialize_weights()
        zero_module(self.out_layer)
        self._finish_init(use_fp16)

    def forward(self, x: SparseTensor, **block_kwargs) -> SparseTensor:
        """Raw output SparseTensor [N, out_channels] (same coords as ``x``)."""
        h = super().forward(x, **block_kwargs).type(x.dtype)
        h = output_norm(h)
        return self.out_layer(h)

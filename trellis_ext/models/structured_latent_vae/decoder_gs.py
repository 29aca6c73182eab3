"""SLat Gaussian decoder: structured latents -> 32 Gaussians per voxel (one ``Gaussian`` per item)."""
from __future__ import annotations

from typing import Any, Dict, List

import torch

from ...representations.gaussian import DEFAULT_REPRESENTATION_CONFIG, Gaussian, compute_offset_perturbation, gaussians_from_voxel_output, \
    voxel_output_layout
from ...sparse import SparseLinear, SparseTensor
from ..base import output_norm, zero_module
from .base import SparseTransformerBase

__all__ = ["SLatGaussianDecoder"]


class SLatGaussianDecoder(SparseTransformerBase):
    """Backbone -> non-affine layer norm -> ``out_layer`` [N, 14·G] -> ``Gaussian`` per batch item.

    ``representation_config``: lr, perturb_offset, voxel_size, num_gaussians, 2d/3d filter kernel
    sizes, scaling_bias, opacity_bias, scaling_activation (TRELLIS's keys).
    """

    def __init__(self, resolution: int, model_channels: int, latent_channels: int, num_blocks: int,
                 num_heads: int = None, num_head_channels: int = 64, mlp_ratio: float = 4,
                 attn_mode: str = "swin", window_size: int = 8, pe_mode: str = "ape",
                 use_fp16: bool = False, use_checkpoint: bool = False, qk_rms_norm: bool = False,
                 representation_config: Dict[str, Any] = None):
        super().__init__(latent_channels, model_channels, num_blocks, num_heads, num_head_channels, mlp_ratio,
                         attn_mode, window_size, pe_mode, use_fp16, use_checkpoint, qk_rms_norm)
        if representation_config is None:
            raise ValueError("SLatGaussianDecoder needs representation_config")
        self.resolution = resolution
        self.rep_config = representation_config
        layout = voxel_output_layout(representation_config["num_gaussians"])
        self.out_channels = max(stop for _, stop, _ in layout.values())
        self.out_layer = SparseLinear(model_channels, self.out_channels)
        if representation_config.get("perturb_offset", DEFAULT_REPRESENTATION_CONFIG["perturb_offset"]):
            self.register_buffer("offset_perturbation", compute_offset_perturbation(
                representation_config["num_gaussians"], representation_config["voxel_size"]))
        else:
            self.offset_perturbation = None
        self.initialize_weights()
        zero_module(self.out_layer)
        self._finish_init(use_fp16)

    def to_representation(self, x: SparseTensor) -> List[Gaussian]:
        """Raw per-voxel output [N, 14·G] -> one ``Gaussian`` per batch item."""
        out = []
        for sl in x.layout:
            out.append(gaussians_from_voxel_output(
                x.feats[sl], x.coords[sl, 1:], self.resolution, self.rep_config, self.offset_perturbation))
        return out

    def decode_raw(self, h: SparseTensor, dtype: torch.dtype) -> SparseTensor:
        h = h.type(dtype)
        h = output_norm(h)
        return self.out_layer(h)

    def forward(self, x: SparseTensor, **block_kwargs) -> List[Gaussian]:
        h = super().forward(x, **block_kwargs)
        return self.to_representation(self.decode_raw(h, x.dtype))

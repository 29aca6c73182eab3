"""SLat encoder: per-voxel DINOv2 features [N, 1024] -> structured latents [N, latent_channels]."""
from __future__ import annotations

import torch

from ...sparse import SparseLinear, SparseTensor
from ..base import output_norm
from .base import SparseTransformerBase

__all__ = ["SLatEncoder"]


class SLatEncoder(SparseTransformerBase):
    """Backbone -> non-affine layer norm -> ``out_layer`` (2·latent) -> mean | logvar."""

    def __init__(self, resolution: int, in_channels: int, model_channels: int, latent_channels: int,
                 num_blocks: int, num_heads: int = None, num_head_channels: int = 64, mlp_ratio: float = 4,
                 attn_mode: str = "swin", window_size: int = 8, pe_mode: str = "ape",
                 use_fp16: bool = False, use_checkpoint: bool = False, qk_rms_norm: bool = False):
        super().__init__(in_channels, model_channels, num_blocks, num_heads, num_head_channels, mlp_ratio,
                         attn_mode, window_size, pe_mode, use_fp16, use_checkpoint, qk_rms_norm)
        self.resolution = resolution
        self.latent_channels = latent_channels
        self.out_layer = SparseLinear(model_channels, 2 * latent_channels)
        self.initialize_weights()
        self._finish_init(use_fp16)

    def encode_head(self, h: SparseTensor, dtype: torch.dtype, sample_posterior: bool, return_raw: bool):
        h = h.type(dtype)
        h = output_norm(h)
        h = self.out_layer(h)
        mean, logvar = h.feats.chunk(2, dim=-1)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample_posterior else mean
        z = h.replace(z)
        return (z, mean, logvar) if return_raw else z

    def forward(self, x: SparseTensor, sample_posterior: bool = True, return_raw: bool = False, **block_kwargs):
        """Returns z (SparseTensor [N, latent]), or (z, mean [N, latent], logvar [N, latent])."""
        h = super().forward(x, **block_kwargs)
        return self.encode_head(h, x.dtype, sample_posterior, return_raw)

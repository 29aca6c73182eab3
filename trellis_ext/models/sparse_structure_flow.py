"""Dense flow transformer over the 16³ structure latent grid (TRELLIS's SS flow DiT).

Tokens are the ``patch_size³`` patches of the grid in row-major (x, y, z) order; a persistent
``pos_emb`` buffer [(R/p)³, C] (the 3D sinusoidal embedding of the patch grid) is added after
``input_layer``; ``num_blocks`` adaLN-modulated cross-attention blocks follow; a non-affine layer
norm and ``out_layer`` map back to velocity patches.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..modules.embeddings import AbsolutePositionEmbedder, TimestepEmbedder
from ..modules.spatial import patchify, unpatchify
from ..modules.transformer import ModulatedTransformerCrossBlock
from ..modules.transformer.common import ADALN_CHUNKS
from .base import TrellisModel, init_flow_transformer, output_norm

__all__ = ["SparseStructureFlowModel", "grid_positions"]

SPATIAL_DIMS = 3


def grid_positions(size: int) -> torch.Tensor:
    """[size³, 3] integer positions of a cubic grid in row-major (x, y, z) order."""
    axis = torch.arange(size)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, SPATIAL_DIMS)


class SparseStructureFlowModel(TrellisModel):
    """Velocity field v(x_t, t, cond) on the dense structure latent.

    x: [B, in_channels, R, R, R]; t: [B] (flow time × 1000); cond: [B, L, cond_channels].
    Returns [B, out_channels, R, R, R].
    """

    TORSO = ("blocks",)

    def __init__(self, resolution: int, in_channels: int, model_channels: int, cond_channels: int,
                 out_channels: int, num_blocks: int, num_heads: int = None, num_head_channels: int = 64,
                 mlp_ratio: float = 4, patch_size: int = 2, pe_mode: str = "ape",
                 use_fp16: bool = False, use_checkpoint: bool = False, share_mod: bool = False,
                 qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False):
        super().__init__()
        if resolution % patch_size:
            raise ValueError(f"resolution {resolution} is not divisible by patch_size {patch_size}")
        self.resolution = resolution
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.model_channels = model_channels
        self.patch_size = patch_size
        self.num_heads = num_heads or model_channels // num_head_channels
        self.pe_mode = pe_mode
        self.share_mod = share_mod
        self.use_checkpoint = use_checkpoint
        patch_volume = patch_size ** SPATIAL_DIMS

        self.t_embedder = TimestepEmbedder(model_channels)
        if share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(model_channels, ADALN_CHUNKS * model_channels))
        if pe_mode == "ape":
            positions = grid_positions(resolution // patch_size)
            self.register_buffer("pos_emb", AbsolutePositionEmbedder(model_channels)(positions), persistent=True)
        self.input_layer = nn.Linear(in_channels * patch_volume, model_channels)
        self.blocks = nn.ModuleList([
            self._make_block(i, model_channels, cond_channels, mlp_ratio, qk_rms_norm, qk_rms_norm_cross)
            for i in range(num_blocks)
        ])
        self.out_layer = nn.Linear(model_channels, out_channels * patch_volume)
        self.initialize_weights()
        self._finish_init(use_fp16)

    def initialize_weights(self) -> None:
        """TRELLIS's init (see ``init_flow_transformer``)."""
        init_flow_transformer(self)

    def _make_block(self, index: int, channels: int, cond_channels: int, mlp_ratio: float,
                    qk_rms_norm: bool, qk_rms_norm_cross: bool) -> nn.Module:
        """One transformer block (overridden by the 4D model)."""
        return ModulatedTransformerCrossBlock(
            channels, cond_channels, num_heads=self.num_heads, mlp_ratio=mlp_ratio, attn_mode="full",
            use_checkpoint=self.use_checkpoint, use_rope=(self.pe_mode == "rope"), share_mod=self.share_mod,
            qk_rms_norm=qk_rms_norm, qk_rms_norm_cross=qk_rms_norm_cross)

    def embed_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, R, R, R] -> tokens [B, (R/p)³, model_channels] with the position embedding."""
        h = patchify(x, self.patch_size)
        h = h.reshape(h.shape[0], h.shape[1], -1).permute(0, 2, 1)
        h = self.input_layer(h)
        if self.pe_mode == "ape":
            h = h + self.pos_emb[None].to(h.dtype)
        return h

    def embed_timestep(self, t: torch.Tensor) -> torch.Tensor:
        t_emb = self.t_embedder(t)
        if self.share_mod:
            t_emb = self.adaLN_modulation(t_emb)
        return t_emb

    def unembed_tokens(self, h: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Final norm + ``out_layer``, back to [B, out_channels, R, R, R]."""
        h = h.type(dtype)
        h = output_norm(h)
        h = self.out_layer(h)
        grid = self.resolution // self.patch_size
        h = h.permute(0, 2, 1).reshape(h.shape[0], -1, grid, grid, grid)
        return unpatchify(h, self.patch_size)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, **block_kwargs) -> torch.Tensor:
        expected = [self.in_channels] + [self.resolution] * SPATIAL_DIMS
        if list(x.shape[1:]) != expected:
            raise ValueError(f"expected x of shape [B, {', '.join(map(str, expected))}], got {list(x.shape)}")
        h = self.embed_tokens(x).type(self.dtype)
        t_emb = self.embed_timestep(t).type(self.dtype)
        cond = cond.type(self.dtype)
        for block in self.blocks:
            h = block(h, t_emb, cond, **block_kwargs)
        return self.unembed_tokens(h, x.dtype)

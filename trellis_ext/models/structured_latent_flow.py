"""Sparse flow transformer over 64³ structured latents (TRELLIS's SLat flow DiT).

``input_layer`` -> ``input_blocks`` (sparse conv res-blocks; the last one mean-pools to the 2×
coarser grid) -> + APE of the coarse coords -> ``blocks`` (adaLN cross-attention transformer,
full attention per item) -> ``out_blocks`` (the first upsamples back through the pooling's
inverse map; skip features concatenated on channels) -> non-affine LN -> ``out_layer``.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules.embeddings import AbsolutePositionEmbedder, TimestepEmbedder
from ..modules.norm import LayerNorm32
from ..modules.transformer import ModulatedSparseTransformerCrossBlock
from ..modules.transformer.common import ADALN_CHUNKS
from ..sparse import SparseConv3d, SparseDownsample, SparseLinear, SparseTensor, SparseUpsample
from .base import TrellisModel, init_flow_transformer, output_norm, zero_module

__all__ = ["SparseResBlock3d", "SLatFlowModel"]

KERNEL = 3
NORM_EPS = 1e-6
POOL_FACTOR = 2


class SparseResBlock3d(nn.Module):
    """Timestep-modulated sparse res-block, optionally down/upsampling its input first.

    x: SparseTensor [N, channels]; emb: [B, emb_channels] (one row per batch item of x).
    Path: norm1 (affine LN) -> SiLU -> conv1 -> norm2 (no affine) ·(1+scale)+shift -> SiLU ->
    conv2, plus ``skip_connection`` (SparseLinear when channels change). ``emb_layers`` gives
    (scale, shift) — in that order.
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int = None,
                 downsample: bool = False, upsample: bool = False):
        super().__init__()
        if downsample and upsample:
            raise ValueError("a res-block cannot both downsample and upsample")
        out_channels = out_channels or channels
        self.channels = channels
        self.out_channels = out_channels
        self.norm1 = LayerNorm32(channels, elementwise_affine=True, eps=NORM_EPS)
        self.norm2 = LayerNorm32(out_channels, elementwise_affine=False, eps=NORM_EPS)
        self.conv1 = self._make_conv(channels, out_channels)
        self.conv2 = zero_module(self._make_conv(out_channels, out_channels))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.skip_connection = SparseLinear(channels, out_channels) if channels != out_channels else nn.Identity()
        self.updown = None
        if downsample:
            self.updown = SparseDownsample(POOL_FACTOR)
        elif upsample:
            self.updown = SparseUpsample(POOL_FACTOR)

    def _make_conv(self, in_channels: int, out_channels: int) -> nn.Module:
        """The block's convolution (the 4D CompNet blocks swap in temporal convs)."""
        return SparseConv3d(in_channels, out_channels, KERNEL)

    def _conv(self, conv: nn.Module, x: SparseTensor, **kwargs) -> SparseTensor:
        return conv(x)

    def _updown(self, x: SparseTensor, **kwargs) -> SparseTensor:
        return self.updown(x) if self.updown is not None else x

    def _broadcast_emb(self, emb: torch.Tensor, x: SparseTensor) -> torch.Tensor:
        return emb

    def forward(self, x: SparseTensor, emb: torch.Tensor, **kwargs) -> SparseTensor:
        x = self._updown(x, **kwargs)
        emb_out = self.emb_layers(self._broadcast_emb(emb, x)).type(x.dtype)
        scale, shift = emb_out.chunk(2, dim=1)
        h = x.replace(self.norm1(x.feats))
        h = h.replace(F.silu(h.feats))
        h = self._conv(self.conv1, h, **kwargs)
        h = h.replace(self.norm2(h.feats)) * (1 + scale) + shift
        h = h.replace(F.silu(h.feats))
        h = self._conv(self.conv2, h, **kwargs)
        return h + self.skip_connection(x)


class SLatFlowModel(TrellisModel):
    """Velocity v(x_t, t, cond) on structured latents.

    x: SparseTensor feats [N, in_channels], coords (batch, x, y, z) in [0, resolution);
    t: [B] (flow time × 1000); cond: [B, L, cond_channels]. Returns a SparseTensor with x's coords.
    """

    TORSO = ("input_blocks", "blocks", "out_blocks")

    def __init__(self, resolution: int, in_channels: int, model_channels: int, cond_channels: int,
                 out_channels: int, num_blocks: int, num_heads: int = None, num_head_channels: int = 64,
                 mlp_ratio: float = 4, patch_size: int = 2, num_io_res_blocks: int = 2,
                 io_block_channels: Sequence[int] = None, pe_mode: str = "ape", use_fp16: bool = False,
                 use_checkpoint: bool = False, use_skip_connection: bool = True, share_mod: bool = False,
                 qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False):
        super().__init__()
        io_block_channels = list(io_block_channels or [])
        if 2 ** len(io_block_channels) != patch_size:
            raise ValueError(f"patch_size {patch_size} needs log2(patch_size) = len(io_block_channels) "
                             f"(got {len(io_block_channels)} io block levels)")
        self.resolution = resolution
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.model_channels = model_channels
        self.cond_channels = cond_channels
        self.num_heads = num_heads or model_channels // num_head_channels
        self.mlp_ratio = mlp_ratio
        self.patch_size = patch_size
        self.io_block_channels = io_block_channels
        self.pe_mode = pe_mode
        self.use_checkpoint = use_checkpoint
        self.use_skip_connection = use_skip_connection
        self.share_mod = share_mod
        self.qk_rms_norm = qk_rms_norm
        self.qk_rms_norm_cross = qk_rms_norm_cross

        self.t_embedder = TimestepEmbedder(model_channels)
        if share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(model_channels, ADALN_CHUNKS * model_channels))
        if pe_mode == "ape":
            self.pos_embedder = AbsolutePositionEmbedder(model_channels)
        self.input_layer = SparseLinear(in_channels, io_block_channels[0] if io_block_channels else model_channels)

        self.input_blocks = nn.ModuleList()
        for i, chs in enumerate(io_block_channels):
            next_chs = io_block_channels[i + 1] if i + 1 < len(io_block_channels) else model_channels
            self.input_blocks.extend(self._make_res_block(chs, chs) for _ in range(num_io_res_blocks - 1))
            self.input_blocks.append(self._make_res_block(chs, next_chs, downsample=True))

        self.blocks = nn.ModuleList([self._make_block(i) for i in range(num_blocks)])

        self.out_blocks = nn.ModuleList()
        skip_mult = 2 if use_skip_connection else 1
        prev_channels = [model_channels] + io_block_channels[1:][::-1]
        for chs, prev in zip(reversed(io_block_channels), prev_channels):
            self.out_blocks.append(self._make_res_block(prev * skip_mult, chs, upsample=True))
            self.out_blocks.extend(self._make_res_block(chs * skip_mult, chs) for _ in range(num_io_res_blocks - 1))

        self.out_layer = SparseLinear(io_block_channels[0] if io_block_channels else model_channels, out_channels)
        self.initialize_weights()
        self._finish_init(use_fp16)

    def initialize_weights(self) -> None:
        """TRELLIS's init (see ``init_flow_transformer``); res-block ``conv2`` is zeroed at construction."""
        init_flow_transformer(self)

    def _make_res_block(self, channels: int, out_channels: int, downsample: bool = False,
                        upsample: bool = False) -> nn.Module:
        return SparseResBlock3d(channels, self.model_channels, out_channels=out_channels,
                                downsample=downsample, upsample=upsample)

    def _make_block(self, index: int) -> nn.Module:
        """One transformer block (overridden by the 4D model)."""
        return ModulatedSparseTransformerCrossBlock(
            self.model_channels, self.cond_channels, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
            attn_mode="full", use_checkpoint=self.use_checkpoint, use_rope=(self.pe_mode == "rope"),
            share_mod=self.share_mod, qk_rms_norm=self.qk_rms_norm, qk_rms_norm_cross=self.qk_rms_norm_cross)

    def embed_timestep(self, t: torch.Tensor) -> torch.Tensor:
        t_emb = self.t_embedder(t)
        if self.share_mod:
            t_emb = self.adaLN_modulation(t_emb)
        return t_emb

    def add_position_embedding(self, h: SparseTensor) -> SparseTensor:
        if self.pe_mode == "ape":
            h = h + self.pos_embedder(h.coords[:, 1:]).type(h.dtype)
        return h

    def run_out_blocks(self, h: SparseTensor, blocks: nn.ModuleList, skips: List[torch.Tensor],
                       emb: torch.Tensor, **kwargs) -> SparseTensor:
        """Apply ``blocks`` consuming ``skips`` in reverse (concatenated on channels)."""
        for block, skip in zip(blocks, reversed(skips)):
            if self.use_skip_connection:
                h = h.replace(torch.cat([h.feats, skip], dim=1))
            h = block(h, emb, **kwargs)
        return h

    def forward(self, x: SparseTensor, t: torch.Tensor, cond: torch.Tensor) -> SparseTensor:
        h = self.input_layer(x).type(self.dtype)
        t_emb = self.embed_timestep(t).type(self.dtype)
        cond = cond.type(self.dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, t_emb)
            skips.append(h.feats)
        h = self.add_position_embedding(h)
        for block in self.blocks:
            h = block(h, t_emb, cond)
        h = self.run_out_blocks(h, self.out_blocks, skips, t_emb)
        h = h.type(x.dtype)
        h = output_norm(h)
        return self.out_layer(h)

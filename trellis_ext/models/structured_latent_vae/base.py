"""Sparse transformer backbone shared by the SLat encoder and decoders.

``input_layer`` (SparseLinear) -> + 3D absolute position embedding of the voxel coords ->
``num_blocks`` plain pre-LN sparse transformer blocks (full or swin attention).
"""
from __future__ import annotations

import math
from typing import Dict, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ...modules.embeddings import AbsolutePositionEmbedder
from ...modules.transformer import SparseTransformerBlock
from ...sparse import SparseLinear, SparseTensor
from ..base import TrellisModel, xavier_init_linears

__all__ = ["SparseTransformerBase", "block_attn_config", "split_channels", "layout_channels"]


def layout_channels(layout: Dict[str, Sequence[int]]) -> int:
    """Total channels of a ``{name: per-row shape}`` output layout."""
    return sum(math.prod(shape) for shape in layout.values())


def split_channels(feats: torch.Tensor, layout: Dict[str, Sequence[int]]) -> Dict[str, torch.Tensor]:
    """[N, C] raw output -> ``{name: [N, *shape]}``, consecutive channel slices in ``layout`` order."""
    out, start = {}, 0
    for name, shape in layout.items():
        n = math.prod(shape)
        out[name] = feats[:, start:start + n].reshape(-1, *shape)
        start += n
    return out


def block_attn_config(attn_mode: str, num_blocks: int, window_size: Optional[int]) -> Iterator[Tuple[str, Optional[int], int]]:
    """Per block: (attn_mode, window_size, shift). ``swin`` alternates shift 0 / window_size // 2."""
    for i in range(num_blocks):
        if attn_mode == "full":
            yield "full", None, 0
        elif attn_mode == "swin":
            yield "windowed", window_size, (window_size // 2) * (i % 2)
        elif attn_mode == "windowed":
            yield "windowed", window_size, 0
        else:
            raise ValueError(f"unsupported attn_mode {attn_mode!r} (full, swin, windowed)")


class SparseTransformerBase(TrellisModel):
    """x: SparseTensor feats [N, in_channels], coords [N, 4] (batch, x, y, z) in [0, resolution).

    Returns a SparseTensor [N, model_channels] (torso dtype).
    """

    TORSO = ("blocks",)

    def __init__(self, in_channels: int, model_channels: int, num_blocks: int, num_heads: int = None,
                 num_head_channels: int = 64, mlp_ratio: float = 4.0, attn_mode: str = "full",
                 window_size: int = None, pe_mode: str = "ape", use_fp16: bool = False,
                 use_checkpoint: bool = False, qk_rms_norm: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.num_blocks = num_blocks
        self.window_size = window_size
        self.num_heads = num_heads or model_channels // num_head_channels
        self.mlp_ratio = mlp_ratio
        self.attn_mode = attn_mode
        self.pe_mode = pe_mode
        self.use_checkpoint = use_checkpoint
        self.qk_rms_norm = qk_rms_norm
        if pe_mode == "ape":
            self.pos_embedder = AbsolutePositionEmbedder(model_channels)
        self.input_layer = SparseLinear(in_channels, model_channels)
        self.blocks = nn.ModuleList([
            self._make_block(i, mode, ws, shift)
            for i, (mode, ws, shift) in enumerate(block_attn_config(attn_mode, num_blocks, window_size))
        ])

    def initialize_weights(self) -> None:
        """Xavier Linears with zero biases (TRELLIS's init); subclasses call it after adding heads."""
        xavier_init_linears(self)

    def _make_block(self, index: int, attn_mode: str, window_size: Optional[int], shift: int) -> nn.Module:
        """One transformer block (overridden by the 4D models)."""
        return SparseTransformerBlock(
            self.model_channels, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, attn_mode=attn_mode,
            window_size=window_size, shift_window=shift, use_checkpoint=self.use_checkpoint,
            use_rope=(self.pe_mode == "rope"), qk_rms_norm=self.qk_rms_norm)

    def embed(self, x: SparseTensor) -> SparseTensor:
        h = self.input_layer(x)
        if self.pe_mode == "ape":
            h = h + self.pos_embedder(x.coords[:, 1:]).to(h.dtype)
        return h

    def forward(self, x: SparseTensor, **block_kwargs) -> SparseTensor:
        h = self.embed(x).type(self.dtype)
        for block in self.blocks:
            h = block(h, **block_kwargs)
        return h

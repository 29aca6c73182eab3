"""Dense building blocks of the TRELLIS-compatible core.

* ``norm``       -- ``LayerNorm32``, ``GroupNorm32``, ``ChannelLayerNorm32`` (fp32 compute).
* ``embeddings`` -- ``AbsolutePositionEmbedder`` (sin-first per axis), ``TimestepEmbedder`` ([cos, sin] + MLP).
* ``spatial``    -- ``patchify``, ``unpatchify``, ``pixel_shuffle_3d``.
* ``fp16``       -- ``convert_module_to_f16`` / ``_bf16`` / ``_f32`` / ``convert_module_to`` (for ``Module.apply``).
* ``transformer``-- ``FeedForwardNet``, ``TransformerBlock``, ``ModulatedTransformerCrossBlock`` and the sparse
  ``SparseFeedForwardNet``, ``SparseTransformerBlock``, ``ModulatedSparseTransformerCrossBlock``.
"""
from .embeddings import AbsolutePositionEmbedder, TimestepEmbedder, timestep_embedding
from .fp16 import (
    convert_module_to,
    convert_module_to_bf16,
    convert_module_to_f16,
    convert_module_to_f32,
    zero_module,
)
from .norm import ChannelLayerNorm32, GroupNorm32, LayerNorm32
from .spatial import patchify, pixel_shuffle_3d, unpatchify
from .transformer import (
    FeedForwardNet,
    ModulatedSparseTransformerCrossBlock,
    ModulatedTransformerCrossBlock,
    SparseFeedForwardNet,
    SparseTransformerBlock,
    TransformerBlock,
)

__all__ = [
    "AbsolutePositionEmbedder",
    "TimestepEmbedder",
    "timestep_embedding",
    "convert_module_to",
    "convert_module_to_bf16",
    "convert_module_to_f16",
    "convert_module_to_f32",
    "zero_module",
    "ChannelLayerNorm32",
    "GroupNorm32",
    "LayerNorm32",
    "patchify",
    "pixel_shuffle_3d",
    "unpatchify",
    "FeedForwardNet",
    "ModulatedSparseTransformerCrossBlock",
    "ModulatedTransformerCrossBlock",
    "SparseFeedForwardNet",
    "SparseTransformerBlock",
    "TransformerBlock",
]

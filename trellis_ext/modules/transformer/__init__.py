"""Transformer blocks (dense and sparse, plain and adaLN-modulated) with TRELLIS's parameter names."""
from .blocks import FeedForwardNet, TransformerBlock
from .modulated import ModulatedCrossBlockBase, ModulatedTransformerCrossBlock
from .sparse import ModulatedSparseTransformerCrossBlock, SparseFeedForwardNet, SparseTransformerBlock

__all__ = [
    "FeedForwardNet",
    "TransformerBlock",
    "ModulatedCrossBlockBase",
    "ModulatedTransformerCrossBlock",
    "SparseFeedForwardNet",
    "SparseTransformerBlock",
    "ModulatedSparseTransformerCrossBlock",
]

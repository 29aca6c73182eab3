"""Sparse voxel tensors and their ops (TRELLIS-compatible)."""
from .tensor import SparseTensor, sparse_batch_broadcast, sparse_cat, sparse_unbind
from .linear import SparseLinear
from .nonlinearity import SparseActivation, SparseGELU, SparseReLU, SparseSiLU
from .norm import SparseGroupNorm, SparseGroupNorm32, SparseLayerNorm, SparseLayerNorm32
from .conv import SparseConv3d, build_neighbor_map, kernel_offsets, pad_offsets, submanifold_conv
from .spatial import SparseDownsample, SparseSubdivide, SparseUpsample

__all__ = [
    "SparseTensor", "sparse_batch_broadcast", "sparse_cat", "sparse_unbind",
    "SparseLinear",
    "SparseActivation", "SparseGELU", "SparseReLU", "SparseSiLU",
    "SparseGroupNorm", "SparseGroupNorm32", "SparseLayerNorm", "SparseLayerNorm32",
    "SparseConv3d", "build_neighbor_map", "kernel_offsets", "pad_offsets", "submanifold_conv",
    "SparseDownsample", "SparseSubdivide", "SparseUpsample",
]

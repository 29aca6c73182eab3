"""Sparse ops of the 4D models on folded sparse tensors (coords ``(b·T + t, x, y, z)``).

* ``temporal_conv``     -- ``SparseConv1d`` (kernel (3,1,1,1)) and ``SparseConv4d`` (3^4) submanifold convs
  over (t, x, y, z) within a sample; exact torch path + spconv ``SubMConv4d`` path on CUDA.
* ``temporal_sampling`` -- ``SparseDownsampleTemporal`` (frame pairs -> packed frames, union of voxels,
  mean with ``mean_mode``) and ``SparseUpsampleTemporal`` (copy-back).
"""
from .temporal_conv import (KERNEL_AXES, SparseConv1d, SparseConv4d, SparseTemporalConv, sample_frame_keys,
                            subm_conv_temporal, temporal_neighbor_map)
from .temporal_sampling import (MEAN_MODES, TEMPORAL_FACTOR, UPSAMPLE_T_CACHE_KEY, SparseDownsampleTemporal,
                                SparseUpsampleTemporal, check_even_frames)

__all__ = [
    "KERNEL_AXES", "SparseConv1d", "SparseConv4d", "SparseTemporalConv", "sample_frame_keys",
    "subm_conv_temporal", "temporal_neighbor_map",
    "MEAN_MODES", "TEMPORAL_FACTOR", "UPSAMPLE_T_CACHE_KEY", "SparseDownsampleTemporal",
    "SparseUpsampleTemporal", "check_even_frames",
]

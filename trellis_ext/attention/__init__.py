"""Attention for the TRELLIS-compatible core: backends, functional attention, windows, layers.

* ``backends``   -- backend choice per call (flash_attn / xformers / sdpa / naive; ``ATTN_BACKEND``).
* ``functional`` -- ``dense_attention`` [B, L, H, D], ``varlen_attention`` (packed [ΣL, H, D] + lengths),
  ``partitioned_attention`` (self-attention inside a row partition), ``naive_attention``.
* ``windowed``   -- generic ``window_partition`` and TRELLIS 3D swin ``sparse_windowed_self_attention``.
* ``kv_cache``   -- ``cross_attention_kv_cache``: cross-attention k, v reused across sampler steps.
* ``modules``    -- ``MultiHeadRMSNorm``, ``MultiHeadAttention`` (dense), ``SparseMultiHeadAttention``.
"""
from .backends import available_backends, backend_installed, requested_backend, select_backend
from .functional import dense_attention, naive_attention, partitioned_attention, varlen_attention
from .kv_cache import cross_attention_kv_cache
from .modules import MultiHeadAttention, MultiHeadRMSNorm, SparseMultiHeadAttention
from .windowed import (
    partition_cache_key,
    sparse_window_partition,
    sparse_windowed_self_attention,
    window_partition,
)

__all__ = [
    "cross_attention_kv_cache",
    "available_backends",
    "backend_installed",
    "requested_backend",
    "select_backend",
    "dense_attention",
    "naive_attention",
    "partitioned_attention",
    "varlen_attention",
    "window_partition",
    "partition_cache_key",
    "sparse_window_partition",
    "sparse_windowed_self_attention",
    "MultiHeadRMSNorm",
    "MultiHeadAttention",
    "SparseMultiHeadAttention",
]

"""Sparse temporal ("expanded") self-attention of SS4D's SLat flow and 4D SLat VAE.

Input: a folded SparseTensor, coords [N, 4] int32 as ``(b·T + t, x, y, z)`` (one batch entry per
(sample, frame), rows contiguous per entry; see ``ss4d.frames``), plus ``num_frames`` = T given to
``forward`` as a keyword.

With ``expand_frames=True`` a self-attention layer attends **across the frames of a sample**:

* ``attn_mode="full"`` (SLat flow): one segment per sample = all voxels of its T consecutive batch
  entries (at the flow's transformer these are the T/2 packed frames).
* ``attn_mode="windowed"`` / ``"swin"`` (4D SLat VAE): 4D windows of ``w`` frames × ``w³`` voxels,
  shifted by ``s`` on all four axes. Partition of a row with folded index f = b·T + t (SS4D's, pinned
  by the ``tiny/slat_dec_gs_4d/B2_T6`` fixture): time window ``⌊(f + s) / w⌋`` on the **folded** index
  (so for b > 0 and T mod w ≠ 0 the grid is not aligned to the sample's t = 0), xyz windows
  ``⌊(c + s) / w⌋``, and the sample b as a group id, so windows never mix two samples. This equals
  SS4D's linear id with time key ``⌊(f + s)/w⌋ + b``: for b' > b every f' > f, so the keys differ.
  No roll, no padding: end windows are simply shorter.

Time position ("RoPE-t", ``use_rope_t=True``): q and k of every head are rotated by the frame index
``t = f mod T`` (``ss4d.modules.rope.apply_rotary``, all head dims, interleaved pairs, base
``rope_base``) **before** the q/k RMS norm (``qk_transform`` hook of trellis_ext's layer).

With ``expand_frames=False`` (or for cross-attention) the layer is exactly trellis_ext's
``SparseMultiHeadAttention`` (per-entry full / 3D swin attention, no RoPE-t), as in SS4D where
RoPE-t exists only in the "temporal" attention type. State-dict keys are TRELLIS's in all cases.

Partitions are cached on the tensor's spatial cache (keyed by T, window and shift).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch

from ss4d.frames import require_num_frames, row_frames, row_samples
from ss4d.modules.rope import DEFAULT_BASE, apply_rotary_qk
from trellis_ext.attention import SparseMultiHeadAttention, partition_cache_key, window_partition
from trellis_ext.sparse import SparseTensor

__all__ = [
    "TIME_AND_SPACE_AXES",
    "frame_group_seqlens",
    "window_partition_4d",
    "SparseTemporalMultiHeadAttention",
]

TIME_AND_SPACE_AXES = 4
"""Window axes of the 4D partition: (folded t, x, y, z)."""
_PARTITION_PREFIX = "window_partition_4d"

IntOrSeq = Union[int, Sequence[int]]
Partition = Tuple[Optional[torch.Tensor], Optional[torch.Tensor], List[int]]


def _per_axis(value: IntOrSeq, what: str) -> Tuple[int, ...]:
    if isinstance(value, int):
        return (int(value),) * TIME_AND_SPACE_AXES
    value = tuple(int(v) for v in value)
    if len(value) == 1:
        return value * TIME_AND_SPACE_AXES
    if len(value) == TIME_AND_SPACE_AXES - 1:
        # a 3D (x, y, z) setting: SS4D reuses its first entry for time
        return (value[0],) + value
    if len(value) != TIME_AND_SPACE_AXES:
        raise ValueError(f"{what} needs 1, 3 or {TIME_AND_SPACE_AXES} values; got {value}")
    return value


def _require_frames(x: SparseTensor, num_frames: Optional[int]) -> int:
    return require_num_frames(num_frames, x.batch_size, "temporal attention")


def frame_group_seqlens(x: SparseTensor, num_frames: int) -> List[int]:
    """Voxel count of every sample: sums of ``num_frames`` consecutive entries' counts ([B] python ints)."""
    num_frames = _require_frames(x, num_frames)
    lens = x.seqlens
    return [sum(lens[i:i + num_frames]) for i in range(0, len(lens), num_frames)]


def window_partition_4d(x: SparseTensor, num_frames: int, window_size: IntOrSeq, shift: IntOrSeq = 0) -> Partition:
    """SS4D's 4D swin partition of a folded tensor (see module doc), cached on ``x``'s spatial cache.

    Args:
        x: folded SparseTensor, coords [N, 4] int32 as (b·T + t, x, y, z).
        num_frames: T.
        window_size: w (int) or (wt, wx, wy, wz).
        shift: s (int) or per axis; added to (b·T + t, x, y, z) before the division.

    Returns:
        (fwd_perm [N], bwd_perm [N], seqlens) as ``trellis_ext.attention.window_partition``.
    """
    num_frames = _require_frames(x, num_frames)
    sizes, shifts = _per_axis(window_size, "window_size"), _per_axis(shift, "shift")
    key = partition_cache_key(sizes, shifts, prefix=f"{_PARTITION_PREFIX}_T{num_frames}")
    cached = x.get_spatial_cache(key)
    if cached is None:
        cached = window_partition(x.coords, sizes, shifts, group=row_samples(x, num_frames))
        x.register_spatial_cache(key, cached)
    return cached


class SparseTemporalMultiHeadAttention(SparseMultiHeadAttention):
    """``SparseMultiHeadAttention`` whose self-attention spans the frames of a sample.

    Args:
        channels, num_heads, ctx_channels, type, attn_mode, window_size, shift_window, qkv_bias,
        use_rope, qk_rms_norm: as trellis_ext's ``SparseMultiHeadAttention`` (keys identical). For the
            windowed modes ``window_size`` / ``shift_window`` are an int (same on t, x, y, z) or 4
            values.
        expand_frames: self-attention across frames (see module doc); False = plain per-entry attention.
        use_rope_t: rotate q/k by the frame index before the RMS norm (expanded self-attention only).
        rope_base: RoPE-t base (SS4D: 10000).

    Shapes: forward(x SparseTensor feats [N, C], context=None, num_frames=T) -> SparseTensor [N, C].
    """

    def __init__(self, channels: int, num_heads: int, ctx_channels: Optional[int] = None, type: str = "self",
                 attn_mode: str = "full", window_size: Optional[IntOrSeq] = None,
                 shift_window: Optional[IntOrSeq] = None, qkv_bias: bool = True, use_rope: bool = False,
                 qk_rms_norm: bool = False, *, expand_frames: bool = True, use_rope_t: bool = True,
                 rope_base: float = DEFAULT_BASE):
        super().__init__(channels, num_heads, ctx_channels=ctx_channels, type=type, attn_mode=attn_mode,
                         window_size=window_size, shift_window=shift_window, qkv_bias=qkv_bias,
                         use_rope=use_rope, qk_rms_norm=qk_rms_norm)
        self.expand_frames = bool(expand_frames)
        self.use_rope_t = bool(use_rope_t)
        self.rope_base = float(rope_base)

    @property
    def is_temporal(self) -> bool:
        """Whether this layer is an expanded (cross-frame) self-attention."""
        return self.type == "self" and self.expand_frames

    def qk_transform(self, q: torch.Tensor, k: torch.Tensor, x, num_frames: Optional[int] = None, **kwargs):
        """RoPE-t on q/k [N, H, D] with positions t = (b·T + t) mod T (temporal self-attention only)."""
        if not (self.is_temporal and self.use_rope_t):
            return q, k
        positions = row_frames(x, _require_frames(x, num_frames))
        return apply_rotary_qk(q, k, positions, self.rope_base)

    def self_attn_partition(self, x: SparseTensor, num_frames: Optional[int] = None, **kwargs) -> Partition:
        if not self.is_temporal:
            return super().self_attn_partition(x, **kwargs)
        if self.attn_mode in self.WINDOWED_MODES:
            return window_partition_4d(x, num_frames, self.window_size, self.shift_window)
        return None, None, frame_group_seqlens(x, num_frames)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.is_temporal:
            s += f", expand_frames=True, use_rope_t={self.use_rope_t}, rope_base={self.rope_base:g}"
        return s

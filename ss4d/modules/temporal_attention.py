"""Dense temporal self-attention over frames folded into the batch axis (SS4D's structure flow).

Tokens arrive as x [(B·T), L, C] (row ``b·T + t``, see ``ss4d.frames``); the number of frames T is the
``num_frames`` keyword of ``forward``. The layer keeps TRELLIS's self-attention parameters
(``to_qkv``, ``to_out``, optional ``q_rms_norm`` / ``k_rms_norm``), so a TRELLIS self-attention's
weights load unchanged; only *which tokens attend to which* and the temporal RoPE change.

Two partitions (``attn_mode``):

* ``"windowed"`` -- the *expanded* self-attention of the released SS4D structure flow: the T frames of
  each sample are cut into temporal windows, window id ``⌊(t + shift) / w⌋`` for frame t (non-cyclic:
  no roll, no padding, no mask; the first / last windows are simply shorter; any T works), and all
  ``frames_in_window · L`` tokens of a window attend jointly. ``shift`` is ``w // 2`` on odd blocks
  (``temporal_block_window`` gives the per-block values). Windows never mix two samples.
* ``"full"`` -- all ``T·L`` tokens of a sample attend jointly (the inserted Temporal Layer
  ``temp_attn``, or an expanded self-attention with ``window_size=None``).

Temporal RoPE (``use_rope_t``): q and k of row ``b·T + t`` are rotated by the frame index t (absolute
within the clip, not window-relative; base ``rope_base``; every head dim in interleaved pairs; see
``ss4d.modules.rope``) in ``qk_transform``, i.e. *before* the q/k RMS norm, as the official code does.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from ss4d.frames import check_folded_batch, require_num_frames, split_folded_index
from ss4d.modules.rope import DEFAULT_BASE, apply_rotary_qk
from trellis_ext.attention.modules import MultiHeadAttention

__all__ = ["TemporalMultiHeadAttention", "temporal_window_frames", "temporal_block_window",
           "TEMPORAL_ATTN_MODES", "WINDOW_SHIFT_PERIOD"]

#: Accepted ``attn_mode`` values of ``TemporalMultiHeadAttention``.
TEMPORAL_ATTN_MODES = ("full", "windowed")
#: Blocks alternate shift 0 / shift ``w // 2`` with this period (odd blocks are shifted).
WINDOW_SHIFT_PERIOD = 2
#: Shifted blocks move the window grid by ``window_size // WINDOW_SHIFT_DIVISOR`` frames.
WINDOW_SHIFT_DIVISOR = 2


def temporal_window_frames(num_frames: int, window_size: Optional[int], shift: int = 0) -> List[int]:
    """Frames per temporal window of one clip, in frame order.

    Window id of frame t is ``⌊(t + shift) / window_size⌋`` (non-cyclic); ids are contiguous, so the
    result is simply the run lengths. ``window_size=None`` = one window with all frames.

    Examples: T=10, w=8: shift 0 -> [8, 2]; shift 4 -> [4, 6]. T=32, shift 4 -> [4, 8, 8, 8, 4].
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if window_size is None:
        return [num_frames]
    if window_size < 1:
        raise ValueError(f"window_size must be >= 1 frame, got {window_size}")
    if not 0 <= shift < window_size:
        raise ValueError(f"shift must be in [0, window_size={window_size}), got {shift}")
    ids = torch.div(torch.arange(num_frames) + shift, window_size, rounding_mode="floor")
    return [int(n) for n in torch.bincount(ids) if n > 0]


def temporal_block_window(block_index: int, window_size: Optional[int]):
    """(window_size, shift) of block ``block_index``: shift ``w // 2`` on odd blocks, 0 on even ones;
    ``(None, 0)`` (full temporal attention) when ``window_size`` is None."""
    if window_size is None:
        return None, 0
    shift = (window_size // WINDOW_SHIFT_DIVISOR) * (block_index % WINDOW_SHIFT_PERIOD)
    return window_size, shift


class TemporalMultiHeadAttention(MultiHeadAttention):
    """Self-attention across the frames of each sample, for x [(B·T), L, C].

    Args:
        channels: width C; num_heads: H (head dim D = C / H).
        attn_mode: ``"windowed"`` (temporal windows of ``window_size`` frames, shifted by
            ``shift_window`` frames) or ``"full"`` (all T·L tokens of a sample).
        window_size: frames per window (``"windowed"`` only).
        shift_window: window shift in frames, 0 <= shift < window_size (``"windowed"`` only).
        qkv_bias: biases of ``to_qkv``.
        use_rope_t: rotate q/k by the frame index before the RMS norm.
        rope_base: RoPE-t base (10000).
        qk_rms_norm: ``q_rms_norm`` / ``k_rms_norm`` (gamma [H, D]).

    Shapes:
        forward(x [(B·T), L, C], num_frames=T) -> [(B·T), L, C]. Extra keywords are ignored.
    """

    ATTN_MODES = TEMPORAL_ATTN_MODES
    WINDOWED_MODES = ("windowed",)

    def __init__(self, channels: int, num_heads: int, attn_mode: str = "full",
                 window_size: Optional[int] = None, shift_window: int = 0, qkv_bias: bool = True,
                 use_rope_t: bool = False, rope_base: float = DEFAULT_BASE, qk_rms_norm: bool = False):
        super().__init__(channels, num_heads, type="self", attn_mode=attn_mode, window_size=window_size,
                         shift_window=shift_window, qkv_bias=qkv_bias, qk_rms_norm=qk_rms_norm)
        if attn_mode == "windowed":
            window_size = int(window_size)
            if window_size < 1 or not 0 <= int(shift_window or 0) < window_size:
                raise ValueError(f"need window_size >= 1 and 0 <= shift_window < window_size; got "
                                 f"window_size={window_size}, shift_window={shift_window}")
        elif window_size is not None or shift_window:
            raise ValueError("window_size / shift_window apply to attn_mode='windowed' only")
        self.window_size = window_size
        self.shift_window = int(shift_window or 0)
        self.use_rope_t = use_rope_t
        self.rope_base = float(rope_base)

    def window_frames(self, num_frames: int) -> List[int]:
        """Frames per attention group of one sample (see ``temporal_window_frames``)."""
        if self.attn_mode == "full":
            return [num_frames]
        return temporal_window_frames(num_frames, self.window_size, self.shift_window)

    def qk_transform(self, q: torch.Tensor, k: torch.Tensor, x, num_frames=None, **kwargs):
        """RoPE-t: rows b·T + t of q/k [(B·T), L, H, D] rotated by the frame index t."""
        if not self.use_rope_t:
            return q, k
        num_frames = require_num_frames(num_frames, q.shape[0], type(self).__name__)
        _, frame = split_folded_index(torch.arange(q.shape[0], device=q.device), num_frames)
        positions = frame[:, None]                                    # [(B·T), 1] -> broadcast over L
        return apply_rotary_qk(q, k, positions, self.rope_base)

    def self_attn_segments(self, batch: int, length: int, num_frames=None, **kwargs) -> List[int]:
        """Segment lengths over the [(B·T)·L] flattened rows: per sample, ``frames_in_window · L`` per
        temporal window (rows of a sample are contiguous because the batch is frame-minor)."""
        samples = check_folded_batch(batch, require_num_frames(num_frames, batch, type(self).__name__))
        return [n * length for n in self.window_frames(num_frames)] * samples

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.attn_mode == "windowed":
            s += f", window_frames={self.window_size}, shift_frames={self.shift_window}"
        return s + f", rope_t={self.use_rope_t}"

"""Sparse transformer blocks of the 4D SLat models (keys identical to TRELLIS's blocks).

* :class:`SparseTransformer4DBlock` -- the 4D SLat VAE block: x += Attn(LN1(x)); x += MLP(LN2(x))
  (non-affine LNs), whose self-attention is a :class:`SparseTemporalMultiHeadAttention` (4D shifted
  windows over (folded t, x, y, z) with RoPE-t when expanded).
* :class:`ModulatedSparseTransformerCross4DBlock` -- the SLat flow's DiT block (adaLN, affine LN2 before
  cross-attention) whose self-attention spans all voxels of a sample's frames, with RoPE-t.

Both take ``num_frames`` as a forward keyword; it reaches both attention layers (cross-attention
ignores it and stays per batch entry).
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence, Union

from ss4d.modules.rope import DEFAULT_BASE
from ss4d.modules.sparse_temporal_attention import SparseTemporalMultiHeadAttention
from trellis_ext.modules.transformer import ModulatedSparseTransformerCrossBlock, SparseTransformerBlock

__all__ = ["SparseTransformer4DBlock", "ModulatedSparseTransformerCross4DBlock"]

IntOrSeq = Union[int, Sequence[int]]


def _temporal_attention_factory(expand_self_attn: bool, use_rope_t: bool, rope_base: float):
    """The ``attention_cls`` the trellis_ext block constructors call, with the temporal options bound."""
    return functools.partial(SparseTemporalMultiHeadAttention, expand_frames=expand_self_attn,
                             use_rope_t=use_rope_t, rope_base=rope_base)


class SparseTransformer4DBlock(SparseTransformerBlock):
    """Pre-LN sparse block with 4D (cross-frame) self-attention.

    Args: as trellis_ext's ``SparseTransformerBlock`` plus
        expand_self_attn: attend across frames (4D windows / full); False = per-frame 3D attention.
        use_rope_t: RoPE-t on q/k of the expanded self-attention.
        rope_base: RoPE-t base.

    forward(x SparseTensor [N, C] folded (b·T + t, x, y, z), num_frames=T) -> SparseTensor [N, C].
    """

    def __init__(self, channels: int, num_heads: int, mlp_ratio: float = 4.0, attn_mode: str = "full",
                 window_size: Optional[IntOrSeq] = None, shift_window: Optional[IntOrSeq] = None,
                 use_checkpoint: bool = False, use_rope: bool = False, qk_rms_norm: bool = False,
                 qkv_bias: bool = True, ln_affine: bool = False, *, expand_self_attn: bool = True,
                 use_rope_t: bool = True, rope_base: float = DEFAULT_BASE):
        # an instance attribute shadowing the class's ``attention_cls``; the base constructor builds
        # ``self.attn`` through it (a plain value, so it may be set before nn.Module.__init__)
        self.attention_cls = _temporal_attention_factory(expand_self_attn, use_rope_t, rope_base)
        super().__init__(channels, num_heads, mlp_ratio=mlp_ratio, attn_mode=attn_mode, window_size=window_size,
                         shift_window=shift_window, use_checkpoint=use_checkpoint, use_rope=use_rope,
                         qk_rms_norm=qk_rms_norm, qkv_bias=qkv_bias, ln_affine=ln_affine)


class ModulatedSparseTransformerCross4DBlock(ModulatedSparseTransformerCrossBlock):
    """Sparse DiT block whose self-attention spans the frames of a sample.

    Args: as trellis_ext's ``ModulatedSparseTransformerCrossBlock`` plus ``expand_self_attn``,
    ``use_rope_t``, ``rope_base`` (see :class:`SparseTransformer4DBlock`).

    forward(x SparseTensor [N, C] with B' batch entries, mod [B', C], context [B', Lc, Cc],
    num_frames=T') -> SparseTensor [N, C]; T' = entries per sample (T/2 packed frames in the SLat flow).
    """

    def __init__(self, channels: int, ctx_channels: int, num_heads: int, mlp_ratio: float = 4.0,
                 attn_mode: str = "full", window_size: Optional[IntOrSeq] = None,
                 shift_window: Optional[IntOrSeq] = None, use_checkpoint: bool = False, use_rope: bool = False,
                 qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False, qkv_bias: bool = True,
                 share_mod: bool = False, *, expand_self_attn: bool = True, use_rope_t: bool = True,
                 rope_base: float = DEFAULT_BASE):
        self.attention_cls = _temporal_attention_factory(expand_self_attn, use_rope_t, rope_base)
        super().__init__(channels, ctx_channels, num_heads, mlp_ratio=mlp_ratio, attn_mode=attn_mode,
                         window_size=window_size, shift_window=shift_window, use_checkpoint=use_checkpoint,
                         use_rope=use_rope, qk_rms_norm=qk_rms_norm, qk_rms_norm_cross=qk_rms_norm_cross,
                         qkv_bias=qkv_bias, share_mod=share_mod)

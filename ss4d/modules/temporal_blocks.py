"""4D adaLN-modulated DiT block (SS4D's ``ModulatedTransformerCross4DBlock``), dense tokens.

x [(B·T), L, C] with frames folded into the batch axis; ``num_frames`` is a ``forward`` keyword that
reaches every step. Two independent switches, both off = TRELLIS's block applied per frame:

``expand_self_attn`` (the released SS4D structure flow)
    ``self_attn`` becomes a ``TemporalMultiHeadAttention``: windows of ``window_size`` frames (shift
    ``shift_window_t``) or, with ``window_size=None``, all T·L tokens of a sample; RoPE-t when
    ``use_rope_t``. Same keys as TRELLIS (``self_attn.to_qkv``, ``to_out``, ``{q,k}_rms_norm.gamma``).
    Without ``expand_self_attn`` the self-attention is TRELLIS's per-frame attention and RoPE-t is not
    applied to it (as in the official code, whose plain "self" branch ignores RoPE-t).

``insert_temporal`` (the paper's separate Temporal Layer; not in the released configs)
    New sub-modules ``temp_attn`` (full temporal attention over all T·L tokens of a sample, RoPE-t when
    ``use_rope_t``, q/k RMS norm when ``qk_rms_norm`` -- the official block passes the model's
    ``qk_rms_norm`` to it, and the fixture checkpoint carries ``temp_attn.{q,k}_rms_norm.gamma``),
    ``norm4`` (LayerNorm, no affine, eps 1e-6) and ``adaLN_modulation_temporal`` (SiLU -> Linear(C, 3C):
    shift_mta, scale_mta, gate_mta from the block's timestep embedding). Computation::

        x = x + gate_msa · SelfAttn(norm1(x) · (1 + scale_msa) + shift_msa)
        x = x + gate_mta · TempAttn(norm2(x) · (1 + scale_mta) + shift_mta)     # norm2: affine LN
        x = x + CrossAttn(norm4(x), context)                                    # norm4, not norm2
        x = x + gate_mlp · MLP(norm3(x) · (1 + scale_mlp) + shift_mlp)

    The cross-attention pre-norm switches from the affine ``norm2`` to the non-affine ``norm4`` in this
    mode (official behaviour, kept so the official checkpoints compute the official numbers). A block
    inflated from TRELLIS stays equal to TRELLIS by absorbing norm2's affine into ``cross_attn.to_q``:
    see ``absorb_cross_norm_affine`` (called by ``ss4d.models.ss_flow_4d.inflate_ss_flow``).

Keys are exactly the official ones: ``blocks.i.temp_attn.{to_qkv,to_out}.*``,
``blocks.i.temp_attn.{q,k}_rms_norm.gamma``, ``blocks.i.adaLN_modulation_temporal.1.{weight [3C, C], bias}``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ss4d.modules.rope import DEFAULT_BASE
from ss4d.modules.temporal_attention import TemporalMultiHeadAttention
from trellis_ext.modules.norm import LayerNorm32
from trellis_ext.modules.transformer import ModulatedTransformerCrossBlock
from trellis_ext.modules.transformer.common import LN_EPS

__all__ = ["ModulatedTransformerCross4DBlock", "TEMPORAL_ADALN_CHUNKS"]

#: shift, scale, gate of the inserted Temporal Layer.
TEMPORAL_ADALN_CHUNKS = 3


class ModulatedTransformerCross4DBlock(ModulatedTransformerCrossBlock):
    """Dense 4D DiT block.

    Args:
        channels, ctx_channels, num_heads, mlp_ratio, use_checkpoint, qk_rms_norm, qk_rms_norm_cross,
            qkv_bias, share_mod: as TRELLIS's ``ModulatedTransformerCrossBlock``.
        expand_self_attn: self-attention across the frames of each sample (see module docstring).
        window_size: temporal window in frames of the expanded self-attention (None = all frames);
            needs ``expand_self_attn``.
        shift_window_t: window shift in frames (0 <= shift < window_size).
        use_rope_t: RoPE-t in the temporal attentions (expanded ``self_attn`` and ``temp_attn``).
        rope_base: RoPE-t base. (The official block does not pass it to ``temp_attn``, which always uses
            10000; every config uses 10000, so the two agree. Here both attentions use ``rope_base``.)
        insert_temporal: add the Temporal Layer (``temp_attn``, ``norm4``, ``adaLN_modulation_temporal``).

    Shapes:
        forward(x [(B·T), L, C], mod [(B·T), C], context [(B·T), Lc, Cc], num_frames=T) -> [(B·T), L, C].
        Cross-attention is row-wise: frame row b·T + t attends only context row b·T + t.
    """

    def __init__(self, channels: int, ctx_channels: int, num_heads: int, mlp_ratio: float = 4.0,
                 use_checkpoint: bool = False, qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False,
                 qkv_bias: bool = True, share_mod: bool = False, expand_self_attn: bool = False,
                 window_size: Optional[int] = None, shift_window_t: int = 0, use_rope_t: bool = False,
                 rope_base: float = DEFAULT_BASE, insert_temporal: bool = False):
        super().__init__(channels, ctx_channels, num_heads, mlp_ratio=mlp_ratio, attn_mode="full",
                         use_checkpoint=use_checkpoint, qk_rms_norm=qk_rms_norm,
                         qk_rms_norm_cross=qk_rms_norm_cross, qkv_bias=qkv_bias, share_mod=share_mod)
        if window_size is not None and not expand_self_attn:
            raise ValueError("window_size (temporal windows of the self-attention) needs expand_self_attn=True")
        if insert_temporal and share_mod:
            raise ValueError("insert_temporal needs per-block modulation (share_mod=False): "
                             "adaLN_modulation_temporal reads the C-wide timestep embedding")
        self.expand_self_attn = expand_self_attn
        self.insert_temporal = insert_temporal
        if expand_self_attn:
            self.self_attn = TemporalMultiHeadAttention(
                channels, num_heads, attn_mode="full" if window_size is None else "windowed",
                window_size=window_size, shift_window=shift_window_t if window_size is not None else 0,
                qkv_bias=qkv_bias, use_rope_t=use_rope_t, rope_base=rope_base, qk_rms_norm=qk_rms_norm)
        if insert_temporal:
            self.temp_attn = TemporalMultiHeadAttention(
                channels, num_heads, attn_mode="full", qkv_bias=qkv_bias, use_rope_t=use_rope_t,
                rope_base=rope_base, qk_rms_norm=qk_rms_norm)
            self.norm4 = LayerNorm32(channels, elementwise_affine=False, eps=LN_EPS)
            self.adaLN_modulation_temporal = nn.Sequential(
                nn.SiLU(), nn.Linear(channels, TEMPORAL_ADALN_CHUNKS * channels, bias=True))

    # ------------------------------------------------------------------ steps
    def _between_attn_step(self, x, mod: torch.Tensor, **kwargs):
        """The inserted Temporal Layer (identity without ``insert_temporal``)."""
        if not self.insert_temporal:
            return x
        linear = self.adaLN_modulation_temporal[-1]
        shift, scale, gate = self.adaLN_modulation_temporal(mod.to(linear.weight.dtype)).chunk(
            TEMPORAL_ADALN_CHUNKS, dim=1)
        h = self._modulate(self._norm(self.norm2, x), shift, scale)
        h = self.temp_attn(h, **kwargs)
        return self._residual(x, self._gate(h, gate))

    def _cross_attn_step(self, x, context, **kwargs):
        norm = self.norm4 if self.insert_temporal else self.norm2
        return self._residual(x, self.cross_attn(self._norm(norm, x), context, **kwargs))

    # ------------------------------------------------------------------ inflation helper
    @torch.no_grad()
    def absorb_cross_norm_affine(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Fold an affine pre-norm (γ = ``weight``, β = ``bias``) into ``cross_attn.to_q``.

        With ``to_q`` = (W, b) this sets W' = W·diag(γ), b' = b + W·β, so that
        ``to_q'(n) == to_q(n·γ + β)`` for every normalised input n. Used by the inflation of an
        ``insert_temporal`` block from TRELLIS: TRELLIS's cross-attention reads ``norm2(x)`` (affine),
        this block reads the non-affine ``norm4(x)``; after absorbing TRELLIS's norm2 (γ, β) the
        cross-attention output is unchanged (exact up to float rounding; any q RMS norm acts after
        ``to_q`` and is unaffected). Computed in float64, stored in the parameters' dtype.
        """
        to_q = self.cross_attn.to_q
        w = to_q.weight.double()
        gamma, beta = weight.detach().double().to(w.device), bias.detach().double().to(w.device)
        new_bias = w @ beta
        if to_q.bias is not None:
            new_bias = new_bias + to_q.bias.double()
        elif beta.abs().max() > 0:
            raise ValueError("cannot absorb a norm bias into a bias-free to_q (qkv_bias=False)")
        to_q.weight.copy_((w * gamma[None, :]).to(to_q.weight.dtype))
        if to_q.bias is not None:
            to_q.bias.copy_(new_bias.to(to_q.bias.dtype))

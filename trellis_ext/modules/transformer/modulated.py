"""adaLN-modulated cross-attention block (TRELLIS's DiT block), dense tokens.

Keys: ``norm2.{weight,bias}`` (the only affine norm), ``self_attn.*``, ``cross_attn.*``, ``mlp.mlp.{0,2}``,
``adaLN_modulation.1.*`` (Linear C -> 6C after a SiLU; absent with ``share_mod``).

Computation, with (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp) = adaLN(mod):

    x = x + gate_msa · SelfAttn(norm1(x) · (1 + scale_msa) + shift_msa)
    x = x + CrossAttn(norm2(x), context)
    x = x + gate_mlp · MLP(norm3(x) · (1 + scale_mlp) + shift_mlp)

Norms: LayerNorm eps 1e-6 computed in fp32 (norm1/norm3 without affine, norm2 affine).

Extension points (4D): ``_forward`` calls ``modulation(mod)``, then ``_self_attn_step``,
``_between_attn_step`` (identity: the place for an inserted temporal layer), ``_cross_attn_step`` and
``_mlp_step``; every extra keyword of ``forward`` (e.g. ``num_frames``) reaches each step and both
attention layers. The tensor helpers ``_norm`` / ``_modulate`` / ``_gate`` / ``_residual`` hide the dense
vs sparse difference, so a 4D subclass of either block overrides only the steps it changes.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ...attention.modules import MultiHeadAttention
from ..norm import LayerNorm32
from .blocks import FeedForwardNet
from .common import ADALN_CHUNKS, LN_EPS, CheckpointMixin

__all__ = ["ModulatedTransformerCrossBlock", "ModulatedCrossBlockBase"]


class ModulatedCrossBlockBase(CheckpointMixin, nn.Module):
    """Parameters and step structure shared by the dense and sparse modulated blocks.

    Args:
        channels: width C.
        ctx_channels: context width Cc.
        num_heads: heads of both attentions.
        mlp_ratio: MLP expansion.
        attn_mode, window_size, shift_window: self-attention partition (cross-attention is always full).
        use_checkpoint: activation checkpointing while training.
        use_rope: must be False (see ``MultiHeadAttention.qk_transform``).
        qk_rms_norm: q/k RMS norms in self-attention; qk_rms_norm_cross: in cross-attention.
        qkv_bias: biases of the q/k/v projections.
        share_mod: the caller passes the 6C modulation directly (no ``adaLN_modulation`` here).
    """

    attention_cls = MultiHeadAttention
    ffn_cls = FeedForwardNet

    def __init__(
        self,
        channels: int,
        ctx_channels: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        attn_mode: str = "full",
        window_size: Optional[Union[int, Sequence[int]]] = None,
        shift_window: Optional[Union[int, Sequence[int]]] = None,
        use_checkpoint: bool = False,
        use_rope: bool = False,
        qk_rms_norm: bool = False,
        qk_rms_norm_cross: bool = False,
        qkv_bias: bool = True,
        share_mod: bool = False,
    ):
        super().__init__()
        self.channels = channels
        self.use_checkpoint = use_checkpoint
        self.share_mod = share_mod
        self.norm1 = LayerNorm32(channels, elementwise_affine=False, eps=LN_EPS)
        self.norm2 = LayerNorm32(channels, elementwise_affine=True, eps=LN_EPS)
        self.norm3 = LayerNorm32(channels, elementwise_affine=False, eps=LN_EPS)
        self.self_attn = self.attention_cls(
            channels, num_heads=num_heads, type="self", attn_mode=attn_mode, window_size=window_size,
            shift_window=shift_window, qkv_bias=qkv_bias, use_rope=use_rope, qk_rms_norm=qk_rms_norm,
        )
        self.cross_attn = self.attention_cls(
            channels, ctx_channels=ctx_channels, num_heads=num_heads, type="cross", attn_mode="full",
            qkv_bias=qkv_bias, qk_rms_norm=qk_rms_norm_cross,
        )
        self.mlp = self.ffn_cls(channels, mlp_ratio=mlp_ratio)
        if not share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, ADALN_CHUNKS * channels, bias=True))

    # ------------------------------------------------------------------ tensor helpers (dense here)
    def _norm(self, norm: nn.Module, x):
        return norm(x)

    def _modulate(self, h, shift: torch.Tensor, scale: torch.Tensor):
        """h [B, L, C] · (1 + scale[B, C]) + shift[B, C] (modulation cast to h's dtype)."""
        return h * (1 + scale.to(h.dtype).unsqueeze(1)) + shift.to(h.dtype).unsqueeze(1)

    def _gate(self, h, gate: torch.Tensor):
        """h [B, L, C] · gate[B, C]."""
        return h * gate.to(h.dtype).unsqueeze(1)

    def _residual(self, x, h):
        return x + h

    # ------------------------------------------------------------------ steps
    def modulation(self, mod: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """mod [B, C] (or [B, 6C] with ``share_mod``) -> 6 chunks [B, C]."""
        if not self.share_mod:
            mod = self.adaLN_modulation(mod.to(self.adaLN_modulation[1].weight.dtype))
        return mod.chunk(ADALN_CHUNKS, dim=1)

    def _self_attn_step(self, x, shift: torch.Tensor, scale: torch.Tensor, gate: torch.Tensor, **kwargs):
        h = self._modulate(self._norm(self.norm1, x), shift, scale)
        h = self.self_attn(h, **kwargs)
        return self._residual(x, self._gate(h, gate))

    def _between_attn_step(self, x, mod: torch.Tensor, **kwargs):
        """Identity; a 4D subclass may insert a temporal layer here (``mod`` = the block's input mod)."""
        return x

    def _cross_attn_step(self, x, context, **kwargs):
        h = self.cross_attn(self._norm(self.norm2, x), context, **kwargs)
        return self._residual(x, h)

    def _mlp_step(self, x, shift: torch.Tensor, scale: torch.Tensor, gate: torch.Tensor, **kwargs):
        h = self.mlp(self._modulate(self._norm(self.norm3, x), shift, scale))
        return self._residual(x, self._gate(h, gate))

    def _forward(self, x, mod: torch.Tensor, context, **kwargs):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.modulation(mod)
        x = self._self_attn_step(x, shift_msa, scale_msa, gate_msa, **kwargs)
        x = self._between_attn_step(x, mod, **kwargs)
        x = self._cross_attn_step(x, context, **kwargs)
        return self._mlp_step(x, shift_mlp, scale_mlp, gate_mlp, **kwargs)

    def forward(self, x, mod: torch.Tensor, context, **kwargs):
        return self._run(x, mod, context, **kwargs)


class ModulatedTransformerCrossBlock(ModulatedCrossBlockBase):
    """Dense DiT block (args as ``ModulatedCrossBlockBase``).

    forward(x [B, L, C], mod [B, C] (or [B, 6C] with share_mod), context [B, Lc, Cc], **kwargs) -> [B, L, C].
    """

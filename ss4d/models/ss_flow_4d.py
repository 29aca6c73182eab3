"""4D structure flow (SS4D's ``SparseStructureFlow4DModel``) and its inflation from TRELLIS.

TRELLIS's dense structure-flow DiT with frames folded into the batch axis (``ss4d.frames``):

* x [(B·T), in_channels, R, R, R] (row ``b·T + t``), t [(B·T)] (flow time × 1000, one value per frame
  row; the sampler gives every frame the same t), cond [(B·T), Lc, cond_channels] (frame row b·T + t
  cross-attends only its own condition row: per-frame conditioning), ``num_frames`` = T.
* tokens [(B·T), (R/p)³, C]; TRELLIS's 3D sinusoidal ``pos_emb`` is added for ``pe_mode`` "ape" and
  "rope_t" (shared by all frames); "rope_t" additionally rotates q/k of the temporal attentions by the
  frame index (RoPE-t, no parameters).
* blocks: ``ModulatedTransformerCross4DBlock`` (``ss4d.modules.temporal_blocks``); block i with
  ``expand_self_attn`` and ``window_size=w`` attends jointly over windows of w frames, shifted by
  ``w // 2`` frames on odd blocks (``temporal_block_window``); ``window_size=None`` = all frames.
* output [(B·T), out_channels, R, R, R].

State dict: TRELLIS's keys exactly (``ss_flow_img_dit_L_16l8_fp16`` loads into the released config),
plus, with ``insert_temporal``, ``blocks.i.temp_attn.*`` and ``blocks.i.adaLN_modulation_temporal.1.*``.

Init (``initialize_weights``): TRELLIS's (xavier Linears, zero adaLN outputs and ``out_layer``), and
``adaLN_modulation_temporal``'s last Linear is **zero** (our choice; the official code leaves it xavier),
so an inserted Temporal Layer starts as the identity (shift = scale = gate = 0).

``inflate_ss_flow`` builds this model from a trained TRELLIS ``SparseStructureFlowModel``.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn

from ss4d.frames import FrameLayoutError, require_num_frames
from ss4d.modules.rope import DEFAULT_BASE, PE_MODES_4D, ROPE_T_MODE
from ss4d.modules.temporal_attention import temporal_block_window
from ss4d.modules.temporal_blocks import ModulatedTransformerCross4DBlock
from trellis_ext.models.base import zero_module
from trellis_ext.models.sparse_structure_flow import SparseStructureFlowModel

from .weight_transfer import build_inflated

__all__ = ["SparseStructureFlow4DModel", "inflate_ss_flow", "PE_MODES", "FOUR_D_ARGS", "TEMPORAL_PARAM_PREFIXES"]

#: Position-embedding modes: "ape" = TRELLIS's 3D APE only; "rope_t" = 3D APE + temporal RoPE.
PE_MODES = PE_MODES_4D
#: Constructor args the 4D model adds to TRELLIS's (``pe_mode`` is shared but gains "rope_t").
FOUR_D_ARGS = ("pe_mode", "rope_base", "window_size", "expand_self_attn", "insert_temporal")
#: Sub-module names (inside each block) that hold parameters TRELLIS does not have.
TEMPORAL_PARAM_PREFIXES = ("temp_attn.", "adaLN_modulation_temporal.")


class SparseStructureFlow4DModel(SparseStructureFlowModel):
    """Velocity field of the 4D structure flow.

    Args: those of TRELLIS's ``SparseStructureFlowModel`` plus
        pe_mode: "ape" or "rope_t" (APE kept + RoPE-t on the temporal attentions).
        rope_base: RoPE-t base (10000).
        window_size: temporal window of the expanded self-attention in frames (None = all frames);
            needs ``expand_self_attn``.
        expand_self_attn: self-attention of every block spans frames (released SS4D design).
        insert_temporal: add the Temporal Layer to every block (paper's Figure 2 design).

    Shapes:
        forward(x [(B·T), in, R, R, R], t [(B·T)], cond [(B·T), Lc, Cc], num_frames=T)
        -> [(B·T), out, R, R, R]. The folded batch must be a whole number of T-frame clips.
    """

    def __init__(self, resolution: int, in_channels: int, model_channels: int, cond_channels: int,
                 out_channels: int, num_blocks: int, num_heads: Optional[int] = None,
                 num_head_channels: int = 64, mlp_ratio: float = 4, patch_size: int = 2,
                 pe_mode: str = "ape", rope_base: float = DEFAULT_BASE, window_size: Optional[int] = None,
                 use_fp16: bool = False, use_checkpoint: bool = False, share_mod: bool = False,
                 qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False,
                 expand_self_attn: bool = False, insert_temporal: bool = False):
        if pe_mode not in PE_MODES:
            raise ValueError(f"pe_mode must be one of {PE_MODES}; got {pe_mode!r} "
                             "(TRELLIS's spatial RoPE 'rope' is unsupported: dead code in the official model)")
        if window_size is not None and not expand_self_attn:
            raise ValueError("window_size (temporal windows of the self-attention) needs expand_self_attn=True")
        # read by _make_block, which the base constructor calls
        self._temporal_cfg = dict(window_size=window_size, expand_self_attn=expand_self_attn,
                                  insert_temporal=insert_temporal, use_rope_t=(pe_mode == ROPE_T_MODE),
                                  rope_base=float(rope_base))
        # the base builds ``pos_emb`` for "ape"; rope_t keeps it too (see embed_tokens)
        super().__init__(resolution, in_channels, model_channels, cond_channels, out_channels, num_blocks,
                         num_heads=num_heads, num_head_channels=num_head_channels, mlp_ratio=mlp_ratio,
                         patch_size=patch_size, pe_mode="ape", use_fp16=use_fp16,
                         use_checkpoint=use_checkpoint, share_mod=share_mod, qk_rms_norm=qk_rms_norm,
                         qk_rms_norm_cross=qk_rms_norm_cross)
        self.pe_mode = pe_mode
        self.rope_base = float(rope_base)
        self.window_size = window_size
        self.expand_self_attn = expand_self_attn
        self.insert_temporal = insert_temporal

    def _make_block(self, index: int, channels: int, cond_channels: int, mlp_ratio: float,
                    qk_rms_norm: bool, qk_rms_norm_cross: bool) -> nn.Module:
        cfg = self._temporal_cfg
        window, shift = temporal_block_window(index, cfg["window_size"])
        return ModulatedTransformerCross4DBlock(
            channels, cond_channels, num_heads=self.num_heads, mlp_ratio=mlp_ratio,
            use_checkpoint=self.use_checkpoint, qk_rms_norm=qk_rms_norm, qk_rms_norm_cross=qk_rms_norm_cross,
            share_mod=self.share_mod, expand_self_attn=cfg["expand_self_attn"], window_size=window,
            shift_window_t=shift, use_rope_t=cfg["use_rope_t"], rope_base=cfg["rope_base"],
            insert_temporal=cfg["insert_temporal"])

    def initialize_weights(self) -> None:
        """TRELLIS's init, plus a zero ``adaLN_modulation_temporal`` output layer (identity Temporal Layer)."""
        super().initialize_weights()
        for block in self.blocks:
            if getattr(block, "insert_temporal", False):
                zero_module(block.adaLN_modulation_temporal[-1])

    def embed_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[(B·T), C, R, R, R] -> tokens [(B·T), (R/p)³, model_channels] + the 3D APE (ape and rope_t)."""
        h = super().embed_tokens(x)  # TRELLIS's: patchify, input_layer, pos_emb only for pe_mode "ape"
        if self.pe_mode == ROPE_T_MODE:  # rope_t keeps TRELLIS's APE too
            h = h + self.pos_emb[None].to(h.dtype)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, num_frames: int,
                **block_kwargs) -> torch.Tensor:
        num_frames = require_num_frames(num_frames, x.shape[0], type(self).__name__)
        if t.dim() != 1 or t.shape[0] != x.shape[0]:
            raise FrameLayoutError(f"t must be [(B·T)] = [{x.shape[0]}] (one value per frame row); "
                                   f"got {list(t.shape)}")
        if cond.dim() != 3 or cond.shape[0] != x.shape[0]:
            raise FrameLayoutError(f"cond must be [(B·T)={x.shape[0]}, Lc, Cc] (one condition per frame "
                                   f"row); got {list(cond.shape)}")
        return super().forward(x, t, cond, num_frames=num_frames, **block_kwargs)


def _temporal_key(key: str) -> bool:
    """True for state-dict keys of parameters TRELLIS does not have (``blocks.i.<temporal prefix>...``)."""
    parts = key.split(".", 2)
    return len(parts) == 3 and parts[0] == "blocks" and parts[2].startswith(TEMPORAL_PARAM_PREFIXES)


def inflate_ss_flow(trellis_ss_flow: SparseStructureFlowModel, **four_d_args: Any) -> SparseStructureFlow4DModel:
    """Build a ``SparseStructureFlow4DModel`` from a (trained) TRELLIS structure flow.

    The 4D model gets the 3D model's constructor args (``init_args``) updated with ``four_d_args``
    (any of ``FOUR_D_ARGS``), is built on the 3D model's device with the same torso dtype, and loads
    **every** TRELLIS tensor (strict: each TRELLIS key must exist in the 4D model with the same shape,
    and the only keys left unloaded are the new temporal parameters, which keep their identity init:
    zero ``adaLN_modulation_temporal`` output).

    With ``insert_temporal`` the block's cross-attention reads the non-affine ``norm4(x)`` instead of
    TRELLIS's affine ``norm2(x)`` (official design). To keep the inflated model equal to TRELLIS frame by
    frame, TRELLIS's norm2 (γ, β) is absorbed into ``cross_attn.to_q`` (W·diag(γ), b + W·β; see
    ``ModulatedTransformerCross4DBlock.absorb_cross_norm_affine``); ``norm2`` keeps TRELLIS's values and
    feeds the Temporal Layer. No extra config arg is needed, so the official checkpoints (which carry
    their own trained ``to_q``) load and compute exactly as released.

    Equalities after inflation (tested): with ``expand_self_attn`` and T = 1 the model equals TRELLIS
    (RoPE-t at frame 0 is the identity, a window of one frame is per-frame attention); with
    ``insert_temporal`` (and no ``expand_self_attn``) it equals TRELLIS frame by frame for any T.

    Returns the 4D model in the 3D model's train/eval mode.
    """
    if isinstance(trellis_ss_flow, SparseStructureFlow4DModel):
        raise TypeError("inflate_ss_flow takes a 3D TRELLIS SparseStructureFlowModel, got a 4D model")
    if not isinstance(trellis_ss_flow, SparseStructureFlowModel):
        raise TypeError(f"expected a SparseStructureFlowModel, got {type(trellis_ss_flow).__name__}")
    unknown = set(four_d_args) - set(FOUR_D_ARGS)
    if unknown:
        raise TypeError(f"unknown 4D args {sorted(unknown)}; accepted: {FOUR_D_ARGS}")
    model = build_inflated(trellis_ss_flow, SparseStructureFlow4DModel, four_d_args, is_new_key=_temporal_key)
    if model.insert_temporal:
        for block, block3d in zip(model.blocks, trellis_ss_flow.blocks):
            block.absorb_cross_norm_affine(block3d.norm2.weight, block3d.norm2.bias)
    return model

"""``SLatFlow4DModel``: SS4D's 4D sparse flow transformer with CompNet (temporal compression).

Input: x folded SparseTensor, feats [N, in_channels], coords [N, 4] int32 as ``(b·T + t, x, y, z)`` at
``resolution``³ (rows contiguous per (sample, frame) entry); t [B·T] flow time ×1000 (one row per
frame); cond [B·T, L, cond_channels] (row b·T + t = frame t's tokens); ``num_frames`` = T, **even**.
Output: SparseTensor [N, out_channels] on x's coords, same row order.

Data flow (released config ``conv_type="3D_1D"``; SS4D's ``structured_latent_flow_4d``):

| step | module | grid / frames |
|---|---|---|
| 1 | ``input_layer`` SparseLinear | 64³, T entries per sample |
| 2 | ``input_blocks`` spatial res-blocks (3³ convs per frame; the last pools 64³ -> 32³) | T |
| 3 | ``input_blocks_t`` temporal res-blocks (the last merges frame pairs: T -> T/2, union of voxels) | T -> T/2 |
| 4 | + 3D APE of the coords (same for every frame) | T/2 |
| 5 | ``blocks`` DiT blocks: self-attention over all voxels of a sample's packed frames (RoPE-t by packed
|   | index), cross-attention of packed frame k to frames 2k, 2k+1 (cond [B·T/2, 2L, C]), pair-averaged t-emb | T/2 |
| 6 | ``out_blocks_t`` (the first copies packed features back to every frame) | T/2 -> T |
| 7 | ``out_blocks`` spatial (the first upsamples 32³ -> 64³) | T |
| 8 | non-affine LN -> ``out_layer`` | T |

Skips: the output of every input block is concatenated on channels to the input of the mirrored
output block (before its up-sampling). Res-blocks get the per-frame timestep embedding [B·T, C]; a
block whose tensor has fewer entries (after the merge) averages the rows of each entry.

``conv_type``: ``"3D_1D"`` (released; temporal blocks with (3,1,1,1) convs), ``"3D_4D"`` (3^4 convs),
``"non"`` (bare pair merge / copy-back, no temporal convs, temporal skips unused); ``"3D"`` and ``"4D"``
(SS4D ablations; "3D" is broken upstream, "4D" needs spatio-temporal up/down) raise
NotImplementedError.

``temporal_mean_mode``: the pair merge's mean, ``"trellis"`` (default; sum/(n+1), the official
scatter-mean quirk the released weights expect) or ``"exact"`` (sum/n).

Valid T: any even T >= 2 (frames 2k and 2k+1 are merged); T must be the same for every sample.

New parameters (everything else has TRELLIS's ``SLatFlowModel`` keys and shapes): ``input_blocks_t.*``
and ``out_blocks_t.*``. Their init for inflation from TRELLIS is :meth:`SLatFlow4DModel.initialize_temporal_weights`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch
import torch.nn as nn

from ss4d.frames import check_folded_batch
from ss4d.modules.rope import DEFAULT_BASE, PE_MODES_4D, ROPE_T_MODE
from ss4d.modules.sparse_temporal_blocks import ModulatedSparseTransformerCross4DBlock
from ss4d.modules.sparse_temporal_resblocks import (SparseResBlock1d, SparseResBlock3dFrames, SparseResBlock4d,
                                                    SparseResBlockTemporal, average_emb_groups)
from ss4d.sparse import (MEAN_MODES, TEMPORAL_FACTOR, SparseDownsampleTemporal, SparseUpsampleTemporal,
                         check_even_frames)
from trellis_ext.models.base import output_norm, xavier_init_linears, zero_module
from trellis_ext.models.structured_latent_flow import SLatFlowModel
from trellis_ext.modules.embeddings import AbsolutePositionEmbedder
from trellis_ext.sparse import SparseTensor

from .weight_transfer import build_inflated

__all__ = ["SLatFlow4DModel", "ElasticSLatFlow4DModel", "inflate_slat_flow", "CONV_TYPES", "FLOW_4D_DEFAULTS",
           "TEMPORAL_KEY_PREFIXES"]

CONV_TYPES = ("3D_1D", "3D_4D", "non")
"""Implemented ``conv_type`` values (temporal stage: 1D convs / 4D convs / none)."""
UNSUPPORTED_CONV_TYPES = {
    "3D": "SS4D's conv_type='3D' builds no temporal stage but still halves the frames for the transformer "
          "(broken upstream); use '3D_1D' (released), '3D_4D' or 'non'",
    "4D": "conv_type='4D' (spatio-temporal 4D convs in the spatial I/O blocks) is an unreleased SS4D "
          "ablation and is not implemented; use '3D_1D' (released), '3D_4D' or 'non'",
}
TEMPORAL_KEY_PREFIXES = ("input_blocks_t.", "out_blocks_t.")
"""State-dict prefixes of the parameters SS4D adds to TRELLIS's SLat flow."""
TEMPORAL_LEVELS = 1
"""Temporal compression levels (SS4D hard-codes one pair merge)."""
FLOW_4D_DEFAULTS: Dict[str, Any] = {
    "pe_mode": ROPE_T_MODE, "expand_self_attn": True, "conv_type": "3D_1D", "num_io_res4d_blocks": 2,
    "temporal_mean_mode": "exact",
}
"""The 4D args :func:`inflate_slat_flow` adds to a TRELLIS config (``io_block_channels_t`` defaults to
``[model_channels]``). ``temporal_mean_mode="exact"`` so the inflated model starts equal to TRELLIS
on static input; pass ``"trellis"`` to match the released SS4D weights' pooling."""


class SLatFlow4DModel(SLatFlowModel):
    """SS4D's SLat flow with CompNet (see module doc).

    Args (TRELLIS ``SLatFlowModel``'s plus):
        num_io_res4d_blocks: res-blocks per level in ``out_blocks_t`` (the first upsamples).
            ``input_blocks_t`` has ``num_io_res_blocks`` blocks (the last merges pairs), as in SS4D.
        io_block_channels_t: channels of the temporal level; exactly one level, equal to
            ``model_channels`` (default ``[model_channels]``).
        pe_mode: ``"ape"`` (3D APE only) or ``"rope_t"`` (3D APE + RoPE-t over the packed-frame index).
        rope_base: RoPE-t base (10000).
        expand_self_attn: transformer self-attention over all packed frames of a sample (else per
            packed frame).
        conv_type: ``"3D_1D"`` | ``"3D_4D"`` | ``"non"`` (see module doc).
        temporal_mean_mode: ``"trellis"`` | ``"exact"`` pair-merge mean.

    forward(x, t [B·T], cond [B·T, L, C], num_frames=T) -> SparseTensor [N, out_channels].
    """

    TORSO = ("input_blocks", "input_blocks_t", "blocks", "out_blocks", "out_blocks_t")

    def __init__(self, resolution: int, in_channels: int, model_channels: int, cond_channels: int,
                 out_channels: int, num_blocks: int, num_heads: int = None, num_head_channels: int = 64,
                 mlp_ratio: float = 4, patch_size: int = 2, num_io_res_blocks: int = 2,
                 num_io_res4d_blocks: int = 2, io_block_channels: Sequence[int] = None,
                 io_block_channels_t: Sequence[int] = None, pe_mode: str = "rope_t",
                 rope_base: float = DEFAULT_BASE, use_fp16: bool = False, use_checkpoint: bool = False,
                 use_skip_connection: bool = True, share_mod: bool = False, qk_rms_norm: bool = False,
                 qk_rms_norm_cross: bool = False, expand_self_attn: bool = True, conv_type: str = "3D_1D",
                 temporal_mean_mode: str = "trellis"):
        if conv_type in UNSUPPORTED_CONV_TYPES:
            raise NotImplementedError(UNSUPPORTED_CONV_TYPES[conv_type])
        if conv_type not in CONV_TYPES:
            raise ValueError(f"conv_type must be one of {CONV_TYPES}; got {conv_type!r}")
        if pe_mode not in PE_MODES_4D:
            raise ValueError(f"SLatFlow4DModel: pe_mode must be one of {PE_MODES_4D}; got {pe_mode!r}")
        if temporal_mean_mode not in MEAN_MODES:
            raise ValueError(f"temporal_mean_mode must be one of {MEAN_MODES}; got {temporal_mean_mode!r}")
        io_block_channels_t = list(io_block_channels_t) if io_block_channels_t is not None else [model_channels]
        if len(io_block_channels_t) != TEMPORAL_LEVELS or io_block_channels_t[0] != model_channels:
            raise ValueError(
                f"io_block_channels_t must be [model_channels] = [{model_channels}] (SS4D has exactly "
                f"{TEMPORAL_LEVELS} temporal level, fed by the {model_channels}-channel spatial stage); "
                f"got {io_block_channels_t}")
        if num_io_res4d_blocks < 1 or num_io_res_blocks < 1:
            raise ValueError("num_io_res_blocks and num_io_res4d_blocks must be >= 1")
        # plain attributes read by _make_block / _make_res_block during the base constructor
        self.expand_self_attn = bool(expand_self_attn)
        self.rope_base = float(rope_base)
        self.conv_type = conv_type
        self.temporal_mean_mode = temporal_mean_mode
        super().__init__(resolution, in_channels, model_channels, cond_channels, out_channels, num_blocks,
                         num_heads=num_heads, num_head_channels=num_head_channels, mlp_ratio=mlp_ratio,
                         patch_size=patch_size, num_io_res_blocks=num_io_res_blocks,
                         io_block_channels=io_block_channels, pe_mode=pe_mode, use_fp16=False,
                         use_checkpoint=use_checkpoint, use_skip_connection=use_skip_connection,
                         share_mod=share_mod, qk_rms_norm=qk_rms_norm, qk_rms_norm_cross=qk_rms_norm_cross)
        self.num_io_res4d_blocks = num_io_res4d_blocks
        self.io_block_channels_t = io_block_channels_t
        if pe_mode == ROPE_T_MODE:  # the base adds APE only for "ape"; SS4D keeps it with rope_t
            self.pos_embedder = AbsolutePositionEmbedder(model_channels)
        self.input_blocks_t, self.out_blocks_t = self._build_temporal_stage(num_io_res_blocks, num_io_res4d_blocks)
        xavier_init_linears(self.input_blocks_t)
        xavier_init_linears(self.out_blocks_t)
        self.initialize_temporal_weights()
        self._finish_init(use_fp16)

    # ------------------------------------------------------------------ construction
    def _build_temporal_stage(self, n_in: int, n_out: int):
        chs = self.model_channels
        if self.conv_type == "non":
            return (nn.ModuleList([SparseDownsampleTemporal(TEMPORAL_FACTOR, self.temporal_mean_mode)]),
                    nn.ModuleList([SparseUpsampleTemporal(TEMPORAL_FACTOR)]))
        block_cls = SparseResBlock1d if self.conv_type == "3D_1D" else SparseResBlock4d
        make = lambda c_in, **kw: block_cls(c_in, self.model_channels, out_channels=chs,  # noqa: E731
                                            mean_mode=self.temporal_mean_mode, **kw)
        skip_mult = 2 if self.use_skip_connection else 1
        ins = nn.ModuleList([make(chs) for _ in range(n_in - 1)] + [make(chs, downsample=True)])
        outs = nn.ModuleList([make(chs * skip_mult, upsample=True)] +
                             [make(chs * skip_mult) for _ in range(n_out - 1)])
        return ins, outs

    def _make_res_block(self, channels: int, out_channels: int, downsample: bool = False,
                        upsample: bool = False) -> nn.Module:
        return SparseResBlock3dFrames(channels, self.model_channels, out_channels=out_channels,
                                      downsample=downsample, upsample=upsample)

    def _make_block(self, index: int) -> nn.Module:
        return ModulatedSparseTransformerCross4DBlock(
            self.model_channels, self.cond_channels, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
            attn_mode="full", use_checkpoint=self.use_checkpoint, share_mod=self.share_mod,
            qk_rms_norm=self.qk_rms_norm, qk_rms_norm_cross=self.qk_rms_norm_cross,
            expand_self_attn=self.expand_self_attn, use_rope_t=(self.pe_mode == ROPE_T_MODE),
            rope_base=self.rope_base)

    def initialize_weights(self) -> None:
        """TRELLIS's init of the 3D parts (xavier Linears, zero adaLN / out layer) plus, once the temporal
        stage exists, :meth:`initialize_temporal_weights`."""
        super().initialize_weights()
        if "input_blocks_t" in self._modules:
            self.initialize_temporal_weights()

    @torch.no_grad()
    def initialize_temporal_weights(self) -> None:
        """Init of the new CompNet parameters so that, inflated from TRELLIS, the temporal stage starts
        as the identity on the features (up to the pair merge / copy-back):

        * every temporal res-block's ``conv2`` is zero (as TRELLIS's res-blocks), so its residual
          branch outputs 0: ``input_blocks_t`` (skip = Identity) pass their input through;
        * every ``skip_connection`` Linear of shape [C, 2C] (``out_blocks_t``, whose input is
          cat(h, skip)) is [I | 0] with zero bias: identity on the main path h, zero on the skip half;
          a square skip (no skip connection) is I.
        Other temporal parameters keep their construction init (xavier Linears, uniform conv1).
        """
        for block in list(self.input_blocks_t) + list(self.out_blocks_t):
            if not isinstance(block, SparseResBlockTemporal):
                continue
            zero_module(block.conv2)
            skip = block.skip_connection
            if isinstance(skip, nn.Linear):
                skip.weight.zero_()
                c_out = skip.weight.shape[0]
                skip.weight[:, :c_out].copy_(torch.eye(c_out, dtype=skip.weight.dtype))
                if skip.bias is not None:
                    skip.bias.zero_()

    # ------------------------------------------------------------------ forward pieces
    def add_position_embedding(self, h: SparseTensor) -> SparseTensor:
        return h + self.pos_embedder(h.coords[:, 1:]).type(h.dtype)

    @staticmethod
    def _check_inputs(x: SparseTensor, t: torch.Tensor, cond: torch.Tensor, num_frames: int) -> int:
        num_frames = check_even_frames(num_frames, "SLatFlow4DModel")
        check_folded_batch(x.batch_size, num_frames)
        if t.shape[0] != x.batch_size or cond.shape[0] != x.batch_size:
            raise ValueError(f"t and cond need one row per folded entry (B·T = {x.batch_size}); "
                             f"got t {tuple(t.shape)}, cond {tuple(cond.shape)}")
        return num_frames

    @staticmethod
    def pair_average(emb: torch.Tensor) -> torch.Tensor:
        """[B·T, C] -> [B·T/2, C]: mean of rows 2k and 2k+1."""
        return average_emb_groups(emb, emb.shape[0] // TEMPORAL_FACTOR)

    @staticmethod
    def pair_concat_cond(cond: torch.Tensor) -> torch.Tensor:
        """[B·T, L, C] -> [B·T/2, 2L, C]: packed frame k's context = tokens of frames 2k then 2k+1."""
        return cond.reshape(cond.shape[0] // TEMPORAL_FACTOR, -1, cond.shape[-1])

    def forward(self, x: SparseTensor, t: torch.Tensor, cond: torch.Tensor, num_frames: int) -> SparseTensor:
        num_frames = self._check_inputs(x, t, cond, num_frames)
        packed_frames = num_frames // TEMPORAL_FACTOR
        h = self.input_layer(x).type(self.dtype)
        t_emb = self.embed_timestep(t).type(self.dtype)
        t_emb_packed = self.pair_average(t_emb)
        cond_packed = self.pair_concat_cond(cond.type(self.dtype))

        skips: List[torch.Tensor] = []
        for block in self.input_blocks:
            h = block(h, t_emb, num_frames=num_frames)
            skips.append(h.feats)
        skips_t: List[torch.Tensor] = []
        for block in self.input_blocks_t:
            h = self._temporal_block(block, h, t_emb, num_frames)
            skips_t.append(h.feats)

        h = self.add_position_embedding(h)
        for block in self.blocks:
            h = block(h, t_emb_packed, cond_packed, num_frames=packed_frames)

        if self.conv_type == "non":
            for block in self.out_blocks_t:
                h = block(h, num_frames=num_frames)
        else:
            h = self.run_out_blocks(h, self.out_blocks_t, skips_t, t_emb, num_frames=num_frames)
        h = self.run_out_blocks(h, self.out_blocks, skips, t_emb, num_frames=num_frames)

        h = output_norm(h)
        return self.out_layer(h.type(x.dtype))

    def _temporal_block(self, block: nn.Module, h: SparseTensor, t_emb: torch.Tensor, num_frames: int):
        if isinstance(block, SparseDownsampleTemporal):
            return block(h, num_frames)
        return block(h, t_emb, num_frames=num_frames)


ElasticSLatFlow4DModel = SLatFlow4DModel
"""Training-time alias (SS4D's elastic-memory mixin only forces checkpointing; use ``use_checkpoint``)."""


# ------------------------------------------------------------------------------------ inflation
def inflate_slat_flow(trellis_slat_flow: SLatFlowModel, **four_d_args) -> SLatFlow4DModel:
    """Build a :class:`SLatFlow4DModel` from a TRELLIS ``SLatFlowModel``.

    The 4D model gets the 3D model's constructor args, :data:`FLOW_4D_DEFAULTS` and ``four_d_args``
    (later wins). Every TRELLIS weight is loaded on its (unchanged) key -- each TRELLIS key must exist
    in the 4D model with the same shape, and the only 4D keys left are the new ``input_blocks_t.*`` /
    ``out_blocks_t.*`` -- which keep :meth:`SLatFlow4DModel.initialize_temporal_weights`'s init.
    With ``temporal_mean_mode="exact"`` the result on two identical frames equals the TRELLIS model on
    that frame.
    """
    return build_inflated(trellis_slat_flow, SLatFlow4DModel, {**FLOW_4D_DEFAULTS, **four_d_args},
                          is_new_key=lambda key: key.startswith(TEMPORAL_KEY_PREFIXES))

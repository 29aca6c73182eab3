"""4D SLat VAE: TRELLIS's SLat encoder / Gaussian decoder with 4D shifted-window attention + RoPE-t.

Input everywhere: a folded SparseTensor, coords [N, 4] int32 as ``(b·T + t, x, y, z)`` (rows
contiguous per (sample, frame) entry, see ``ss4d.frames``), and ``num_frames`` = T.

Differences from TRELLIS (``trellis_ext.models.structured_latent_vae``), as in SS4D:

* each block's self-attention (``expand_self_attn=True``) uses 4D windows of w frames × w³ voxels,
  shifted by w/2 on t, x, y, z in odd blocks (``attn_mode="swin"``), never mixing samples
  (``ss4d.modules.sparse_temporal_attention``);
* ``pe_mode="rope_t"``: TRELLIS's 3D absolute position embedding is still added at the input (shared
  by all frames) and q/k of the expanded self-attention are rotated by the frame index t
  (base ``rope_base``) before any q/k RMS norm;
* ``forward(x, num_frames, ...)``; the decoder returns one ``Gaussian`` per folded entry b·T + t.

No new parameters: the state-dict keys are TRELLIS's (``SS4D`` saves these checkpoints under the
class names ``SLatEncoder`` / ``SLatGaussianDecoder``; ``ss4d.models`` resolves them to these
classes when the args carry ``pe_mode="rope_t"`` or ``expand_self_attn``).

With T = 1 (or ``expand_self_attn=False``) the models compute exactly TRELLIS's 3D models.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch.nn as nn

from ss4d.frames import require_num_frames
from ss4d.modules.rope import DEFAULT_BASE, PE_MODES_4D, ROPE_T_MODE
from ss4d.modules.sparse_temporal_blocks import SparseTransformer4DBlock
from trellis_ext.models.structured_latent_vae import SLatEncoder, SLatGaussianDecoder
from trellis_ext.modules.embeddings import AbsolutePositionEmbedder
from trellis_ext.representations.gaussian import Gaussian
from trellis_ext.sparse import SparseTensor

from .weight_transfer import build_inflated

__all__ = ["SLatEncoder4D", "SLatGaussianDecoder4D", "inflate_slat_encoder", "inflate_slat_decoder",
           "VAE_4D_DEFAULTS", "PE_MODES_4D"]

VAE_4D_DEFAULTS: Dict[str, Any] = {"pe_mode": ROPE_T_MODE, "expand_self_attn": True}
"""The 4D args SS4D adds to a TRELLIS SLat VAE config (the ``inflate_*`` defaults)."""


class _Temporal4DBackboneMixin:
    """Shared by the 4D encoder / decoder: 4D blocks, APE for ``rope_t`` and the ``num_frames`` check.

    ``_setup_temporal`` must run before the trellis_ext constructor (which builds the blocks through
    ``_make_block``); ``_finish_temporal`` after it.
    """

    def _setup_temporal(self, pe_mode: str, expand_self_attn: bool, rope_base: float) -> None:
        if pe_mode not in PE_MODES_4D:
            raise ValueError(f"4D SLat VAE: pe_mode must be one of {PE_MODES_4D}; got {pe_mode!r}")
        # plain attributes, readable by _make_block during the base constructor
        self.expand_self_attn = bool(expand_self_attn)
        self.rope_base = float(rope_base)
        self.use_rope_t = pe_mode == ROPE_T_MODE

    def _finish_temporal(self) -> None:
        if self.pe_mode == ROPE_T_MODE:  # the base adds APE only for "ape"; SS4D keeps it with rope_t
            self.pos_embedder = AbsolutePositionEmbedder(self.model_channels)

    def _make_block(self, index: int, attn_mode: str, window_size: Optional[int], shift: int) -> nn.Module:
        return SparseTransformer4DBlock(
            self.model_channels, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, attn_mode=attn_mode,
            window_size=window_size, shift_window=shift, use_checkpoint=self.use_checkpoint,
            qk_rms_norm=self.qk_rms_norm, expand_self_attn=self.expand_self_attn, use_rope_t=self.use_rope_t,
            rope_base=self.rope_base)

    def embed(self, x: SparseTensor) -> SparseTensor:
        h = self.input_layer(x)
        return h + self.pos_embedder(x.coords[:, 1:]).to(h.dtype)

    def _check_frames(self, x: SparseTensor, num_frames: int) -> int:
        return require_num_frames(num_frames, x.batch_size, type(self).__name__)


class SLatEncoder4D(_Temporal4DBackboneMixin, SLatEncoder):
    """4D SLat encoder: per-voxel features of every frame -> structured latents (mean | logvar).

    Args: TRELLIS ``SLatEncoder``'s, plus ``expand_self_attn`` (4D windows across frames, default
    True) and ``rope_base`` (10000); ``pe_mode`` defaults to ``"rope_t"``.

    forward(x SparseTensor feats [N, in_channels] folded (b·T + t, x, y, z), num_frames=T,
    sample_posterior=True, return_raw=False) -> z SparseTensor [N, latent] (same coords), or
    (z, mean [N, latent], logvar [N, latent]) with ``return_raw``. The posterior sample uses
    ``torch.randn_like`` (global RNG).
    """

    def __init__(self, resolution: int, in_channels: int, model_channels: int, latent_channels: int,
                 num_blocks: int, num_heads: int = None, num_head_channels: int = 64, mlp_ratio: float = 4,
                 attn_mode: str = "swin", window_size: int = 8, pe_mode: str = "rope_t",
                 use_fp16: bool = False, use_checkpoint: bool = False, qk_rms_norm: bool = False,
                 expand_self_attn: bool = True, rope_base: float = DEFAULT_BASE):
        self._setup_temporal(pe_mode, expand_self_attn, rope_base)
        super().__init__(resolution, in_channels, model_channels, latent_channels, num_blocks, num_heads,
                         num_head_channels, mlp_ratio, attn_mode, window_size, pe_mode, use_fp16,
                         use_checkpoint, qk_rms_norm)
        self._finish_temporal()

    def forward(self, x: SparseTensor, num_frames: int, sample_posterior: bool = True, return_raw: bool = False):
        return super().forward(x, sample_posterior=sample_posterior, return_raw=return_raw,
                               num_frames=self._check_frames(x, num_frames))


class SLatGaussianDecoder4D(_Temporal4DBackboneMixin, SLatGaussianDecoder):
    """4D SLat Gaussian decoder: folded latents -> one ``Gaussian`` per (sample, frame).

    Args: TRELLIS ``SLatGaussianDecoder``'s, plus ``expand_self_attn`` (default True) and ``rope_base``
    (10000); ``pe_mode`` defaults to ``"rope_t"``.

    forward(x SparseTensor feats [N, latent] folded (b·T + t, x, y, z), num_frames=T) -> list of B·T
    ``Gaussian`` (entry i = b·T + t; 32 Gaussians per voxel with TRELLIS's decoding).
    ``decode_raw`` gives the raw per-voxel output [N, 14·G] (hooked as ``out_layer``).
    """

    def __init__(self, resolution: int, model_channels: int, latent_channels: int, num_blocks: int,
                 num_heads: int = None, num_head_channels: int = 64, mlp_ratio: float = 4,
                 attn_mode: str = "swin", window_size: int = 8, pe_mode: str = "rope_t",
                 use_fp16: bool = False, use_checkpoint: bool = False, qk_rms_norm: bool = False,
                 representation_config: Dict[str, Any] = None, expand_self_attn: bool = True,
                 rope_base: float = DEFAULT_BASE):
        self._setup_temporal(pe_mode, expand_self_attn, rope_base)
        super().__init__(resolution, model_channels, latent_channels, num_blocks, num_heads, num_head_channels,
                         mlp_ratio, attn_mode, window_size, pe_mode, use_fp16, use_checkpoint, qk_rms_norm,
                         representation_config)
        self._finish_temporal()

    def forward(self, x: SparseTensor, num_frames: int) -> List[Gaussian]:
        return super().forward(x, num_frames=self._check_frames(x, num_frames))


# ------------------------------------------------------------------------------------ inflation
def _inflate(model3d: nn.Module, cls, four_d_args: Dict[str, Any]) -> nn.Module:
    return build_inflated(model3d, cls, {**VAE_4D_DEFAULTS, **four_d_args})


def inflate_slat_encoder(trellis_encoder: SLatEncoder, **four_d_args) -> SLatEncoder4D:
    """A :class:`SLatEncoder4D` with every weight of a TRELLIS ``SLatEncoder`` (keys identical).

    The 3D constructor args are kept; ``pe_mode="rope_t"`` and ``expand_self_attn=True`` are added
    unless overridden by ``four_d_args`` (e.g. ``rope_base``). The 4D model has no new parameters.
    """
    return _inflate(trellis_encoder, SLatEncoder4D, four_d_args)


def inflate_slat_decoder(trellis_decoder: SLatGaussianDecoder, **four_d_args) -> SLatGaussianDecoder4D:
    """A :class:`SLatGaussianDecoder4D` with every weight of a TRELLIS ``SLatGaussianDecoder``.

    As :func:`inflate_slat_encoder`; with T = 1 the result equals the TRELLIS decoder.
    """
    return _inflate(trellis_decoder, SLatGaussianDecoder4D, four_d_args)

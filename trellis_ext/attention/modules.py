"""Attention layers with TRELLIS's parameter names: dense tokens and sparse voxels.

State-dict keys (identical to TRELLIS, so its checkpoints load as they are):

* self-attention:  ``to_qkv`` Linear(C -> 3C), output viewed as (3, H, D) = [Q(all heads) | K | V];
  ``to_out`` Linear(C -> C).
* cross-attention: ``to_q`` Linear(C -> C); ``to_kv`` Linear(Cc -> 2C) viewed as (2, H, D); ``to_out``.
* ``q_rms_norm.gamma`` / ``k_rms_norm.gamma`` [H, D] when ``qk_rms_norm`` is set.

The attention scale is 1/√D (D = C / H).

Extension points (for the 4D models)
------------------------------------
``forward`` is a fixed sequence of small overridable steps; every extra keyword argument given to
``forward`` (e.g. ``num_frames``) is passed to each step that takes ``**kwargs``:

1. ``project_qkv(feats)`` / ``project_q(feats)`` + ``project_kv(context)`` -> per-head q, k, v;
2. ``qk_transform(q, k, x, **kwargs)`` -> (q, k): identity here; applied **before** the RMS norm (this is
   where SS4D's temporal RoPE goes: it rotates q/k by the frame index, then RMS-normalises);
3. ``qk_norm(q, k)`` -> the optional q/k RMS norms;
4. the attention itself, over a *partition* of the tokens:

   * dense self-attention: ``self_attn_segments(batch, length, **kwargs)`` returns ``None`` (one
     sequence per batch row, a plain dense call) or a list of segment lengths over the flattened
     [B·L] rows -- e.g. a 4D subclass with x [(B·T), L, C] returns ``[frames_in_window · L, ...]`` to
     attend jointly over the tokens of several consecutive frames; ``attend_self`` runs it.
   * sparse self-attention: ``self_attn_partition(x, **kwargs)`` returns ``(fwd_perm, bwd_perm,
     seqlens)``; ``None`` permutations mean "contiguous segments" (``full`` mode: one segment per batch
     item; a 4D subclass can sum the voxel counts of ``num_frames`` consecutive batch entries, or return
     a 4D window partition from ``window_partition``); ``attend_self`` runs it.
   * cross-attention: ``attend_cross(...)`` (row-wise per batch item by default).

5. ``to_out``.

Subclasses may also widen ``ATTN_MODES`` (the accepted ``attn_mode`` values).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..sparse.tensor import SparseTensor
from .functional import dense_attention, partitioned_attention, varlen_attention
from .kv_cache import cached_kv
from .windowed import sparse_window_partition

__all__ = ["MultiHeadRMSNorm", "MultiHeadAttention", "SparseMultiHeadAttention", "ATTN_TYPES"]

#: Accepted values of ``type``.
ATTN_TYPES = ("self", "cross")
#: Number of projections packed in ``to_qkv`` / ``to_kv``.
QKV_SPLITS = 3
KV_SPLITS = 2

Partition = Tuple[Optional[torch.Tensor], Optional[torch.Tensor], List[int]]


class MultiHeadRMSNorm(nn.Module):
    """Per-head RMS norm of q or k: ``normalize(x) · gamma · √D`` computed in fp32, cast back.

    Args:
        dim: head dim D.
        heads: number of heads H.

    Shapes: x [..., H, D] -> [..., H, D]. Parameter ``gamma`` [H, D], initialised to 1.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(heads, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.normalize(x.float(), dim=-1) * self.gamma.float() * self.scale
        return y.to(x.dtype)


class _HeadAttentionBase(nn.Module):
    """Parameters and the tensor-level steps shared by the dense and sparse layers."""

    #: attn_mode values this class accepts (subclasses may extend).
    ATTN_MODES: Tuple[str, ...] = ("full",)
    #: attn_mode values that need ``window_size``.
    WINDOWED_MODES: Tuple[str, ...] = ()

    def __init__(
        self,
        channels: int,
        num_heads: int,
        ctx_channels: Optional[int] = None,
        type: str = "self",
        attn_mode: str = "full",
        window_size: Optional[Union[int, Sequence[int]]] = None,
        shift_window: Optional[Union[int, Sequence[int]]] = None,
        qkv_bias: bool = True,
        use_rope: bool = False,
        qk_rms_norm: bool = False,
    ):
        super().__init__()
        if channels % num_heads != 0:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        if type not in ATTN_TYPES:
            raise ValueError(f"type must be one of {ATTN_TYPES}; got {type!r}")
        if attn_mode not in self.ATTN_MODES:
            raise ValueError(f"{self.__class__.__name__}: attn_mode must be one of {self.ATTN_MODES}; got {attn_mode!r}")
        if attn_mode in self.WINDOWED_MODES:
            if type != "self":
                raise ValueError("windowed attention is self-attention only")
            if window_size is None:
                raise ValueError(f"attn_mode={attn_mode!r} needs window_size")
        if use_rope:
            raise NotImplementedError(
                "TRELLIS's spatial RoPE is unused by every released config and not supported; "
                "position transforms go in a subclass's qk_transform()"
            )
        self.channels = channels
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.ctx_channels = ctx_channels if ctx_channels is not None else channels
        self.type = type
        self.attn_mode = attn_mode
        self.window_size = window_size
        self.shift_window = shift_window if shift_window is not None else 0
        self.use_rope = use_rope
        self.qk_rms_norm = qk_rms_norm

        if type == "self":
            self.to_qkv = nn.Linear(channels, QKV_SPLITS * channels, bias=qkv_bias)
        else:
            self.to_q = nn.Linear(channels, channels, bias=qkv_bias)
            self.to_kv = nn.Linear(self.ctx_channels, KV_SPLITS * channels, bias=qkv_bias)
        if qk_rms_norm:
            self.q_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads)
            self.k_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads)
        self.to_out = nn.Linear(channels, channels)

    # ------------------------------------------------------------------ tensor-level steps
    def project_qkv(self, feats: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[..., C] -> q, k, v each [..., H, D] (self-attention)."""
        qkv = self.to_qkv(feats).unflatten(-1, (QKV_SPLITS, self.num_heads, self.head_dim))
        return qkv.unbind(-3)

    def project_q(self, feats: torch.Tensor) -> torch.Tensor:
        """[..., C] -> q [..., H, D] (cross-attention)."""
        return self.to_q(feats).unflatten(-1, (self.num_heads, self.head_dim))

    def project_kv(self, ctx_feats: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """[..., Cc] -> k, v each [..., H, D] (cross-attention; reused across sampler steps inside
        :func:`~trellis_ext.attention.kv_cache.cross_attention_kv_cache`)."""
        return cached_kv(self, ctx_feats, self._compute_kv)

    def _compute_kv(self, ctx_feats: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        kv = self.to_kv(ctx_feats).unflatten(-1, (KV_SPLITS, self.num_heads, self.head_dim))
        return kv.unbind(-3)

    def qk_transform(self, q: torch.Tensor, k: torch.Tensor, x, **kwargs) -> Tuple[torch.Tensor, torch.Tensor]:
        """Hook applied to q/k before the RMS norm (identity here; e.g. a temporal RoPE in 4D).

        Args:
            q, k: per-head tensors ([B, L, H, D] dense, [N, H, D] sparse; k may come from the context).
            x: the layer input (dense tensor or ``SparseTensor``), for shapes / coordinates.
            kwargs: the extra keyword arguments given to ``forward`` (e.g. ``num_frames``).
        """
        return q, k

    def qk_norm(self, q: torch.Tensor, k: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The optional per-head RMS norms of q and k."""
        if self.qk_rms_norm:
            q, k = self.q_rms_norm(q), self.k_rms_norm(k)
        return q, k

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, heads={self.num_heads}, type={self.type}, "
                f"attn_mode={self.attn_mode}, qk_rms_norm={self.qk_rms_norm}")


class MultiHeadAttention(_HeadAttentionBase):
    """Multi-head self- or cross-attention over dense tokens.

    Args:
        channels: model width C.
        num_heads: H (head dim D = C / H).
        ctx_channels: context width Cc for cross-attention (default C).
        type: ``"self"`` or ``"cross"``.
        attn_mode: ``"full"`` (subclasses may add modes).
        window_size, shift_window: stored for subclasses (windowed dense modes).
        qkv_bias: bias on the q/k/v projections (``to_out`` always has one).
        use_rope: must be False (see ``qk_transform``).
        qk_rms_norm: add ``q_rms_norm`` / ``k_rms_norm``.

    Shapes:
        forward(x [B, L, C], context [B, Lc, Cc] for cross, **kwargs) -> [B, L, C].
    """

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None, **kwargs) -> torch.Tensor:
        batch, length, _ = x.shape
        if self.type == "self":
            q, k, v = self.project_qkv(x)
        else:
            if context is None:
                raise ValueError("cross-attention needs a context")
            q = self.project_q(x)
            k, v = self.project_kv(context)
        q, k = self.qk_transform(q, k, x, **kwargs)
        q, k = self.qk_norm(q, k)
        if self.type == "self":
            h = self.attend_self(q, k, v, **kwargs)
        else:
            h = self.attend_cross(q, k, v, **kwargs)
        return self.to_out(h.reshape(batch, length, self.channels))

    def self_attn_segments(self, batch: int, length: int, **kwargs) -> Optional[List[int]]:
        """Grouping of the [B·L] flattened rows for self-attention: ``None`` = each batch row alone."""
        return None

    def attend_self(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
        """q, k, v [B, L, H, D] -> [B, L, H, D] over the segments of ``self_attn_segments``."""
        batch, length = q.shape[:2]
        segments = self.self_attn_segments(batch, length, **kwargs)
        if segments is None:
            return dense_attention(q, k, v)
        out = varlen_attention(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), segments, segments)
        return out.view(q.shape)

    def attend_cross(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
        """q [B, L, H, D], k/v [B, Lc, H, D] -> [B, L, H, D] (row b attends to context row b)."""
        return dense_attention(q, k, v)


class SparseMultiHeadAttention(_HeadAttentionBase):
    """Multi-head self- or cross-attention for ``SparseTensor`` queries.

    Args:
        channels, num_heads, ctx_channels, type, qkv_bias, use_rope, qk_rms_norm: as ``MultiHeadAttention``.
        attn_mode: ``"full"`` (all voxels of a batch item), ``"swin"`` / ``"windowed"`` (3D windows of
            ``window_size`` shifted by ``shift_window``; the two names are synonyms at this level).
        window_size: int or (wx, wy, wz), required for the windowed modes.
        shift_window: int or (sx, sy, sz), default 0.

    Shapes:
        forward(x SparseTensor feats [N, C], context, **kwargs) -> SparseTensor feats [N, C] (same coords).
        The cross-attention context is a dense [B, Lc, Cc] tensor (row b is batch item b's context) or a
        ``SparseTensor`` with feats [M, Cc] and the same batch size (variable-length contexts).
    """

    ATTN_MODES = ("full", "swin", "windowed")
    WINDOWED_MODES = ("swin", "windowed")

    def forward(self, x: SparseTensor, context: Optional[Union[torch.Tensor, SparseTensor]] = None,
                **kwargs) -> SparseTensor:
        if self.type == "self":
            q, k, v = self.project_qkv(x.feats)
            kv_seqlens = None
        else:
            if context is None:
                raise ValueError("cross-attention needs a context")
            q = self.project_q(x.feats)
            k, v, kv_seqlens = self.project_context(context, x.batch_size)
        q, k = self.qk_transform(q, k, x, **kwargs)
        q, k = self.qk_norm(q, k)
        if self.type == "self":
            h = self.attend_self(q, k, v, x, **kwargs)
        else:
            h = self.attend_cross(q, k, v, x, kv_seqlens, **kwargs)
        return x.replace(self.to_out(h.reshape(h.shape[0], self.channels)))

    def project_context(self, context: Union[torch.Tensor, SparseTensor], batch_size: int
                        ) -> Tuple[torch.Tensor, torch.Tensor, List[int]]:
        """Packed k, v [ΣLc, H, D] and per-item context lengths."""
        if isinstance(context, SparseTensor):
            if context.batch_size != batch_size:
                raise ValueError(f"context has {context.batch_size} items, queries {batch_size}")
            k, v = self.project_kv(context.feats)
            return k, v, context.seqlens
        if context.dim() != 3 or context.shape[0] != batch_size:
            raise ValueError(f"dense context must be [B={batch_size}, Lc, Cc]; got {tuple(context.shape)}")
        k, v = self.project_kv(context.flatten(0, 1))
        return k, v, [context.shape[1]] * batch_size

    def self_attn_partition(self, x: SparseTensor, **kwargs) -> Partition:
        """(fwd_perm, bwd_perm, seqlens) of the self-attention groups; ``None`` perms = contiguous segments."""
        if self.attn_mode in self.WINDOWED_MODES:
            return sparse_window_partition(x, self.window_size, self.shift_window)
        return None, None, x.seqlens

    def attend_self(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, x: SparseTensor,
                    **kwargs) -> torch.Tensor:
        """q, k, v [N, H, D] -> [N, H, D] inside the groups of ``self_attn_partition``."""
        fwd, bwd, seqlens = self.self_attn_partition(x, **kwargs)
        return partitioned_attention(q, k, v, fwd, bwd, seqlens)

    def attend_cross(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, x: SparseTensor,
                     kv_seqlens: List[int], **kwargs) -> torch.Tensor:
        """q [N, H, D], packed k/v [ΣLc, H, D] -> [N, H, D]; item b's voxels attend to its context."""
        return varlen_attention(q, k, v, x.seqlens, kv_seqlens)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.attn_mode in self.WINDOWED_MODES:
            s += f", window_size={self.window_size}, shift_window={self.shift_window}"
        return s

"""Functional multi-head attention: dense batches and packed variable-length sequences.

Layout follows TRELLIS: tokens first, then heads, then head channels.

* dense:  q [B, Lq, H, D], k / v [B, Lk, H, D]           -> [B, Lq, H, D]
* varlen: q [ΣLq, H, D], k / v [ΣLk, H, D] + lengths      -> [ΣLq, H, D]
  (sequence i owns rows ``sum(q_seqlens[:i]) : sum(q_seqlens[:i+1])`` of q and the matching rows of k/v).

The scale defaults to 1/√D. The backend is chosen per call (see ``backends.py``).

How the ``sdpa`` backend does varlen without padding everything to the longest sequence
--------------------------------------------------------------------------------------
Windowed (swin) attention produces thousands of sequences from 1 to 512 tokens, and full sparse attention
over a batch can mix 3 and 50 000 voxels; padding all of them to the longest would multiply the work.
``_varlen_sdpa`` therefore:

1. returns early through one dense call when every sequence has the same (q, kv) lengths;
2. sorts the sequences by (kv length, q length) and cuts the sorted list greedily into *buckets*: a
   bucket grows while each padded length stays within ``max(ceil(shortest · SDPA_BUCKET_PAD_RATIO),
   shortest + SDPA_BUCKET_PAD_SLACK)`` (for q and kv separately), so padding wastes at most ~25 % on
   long sequences and a few dozen tokens on short ones; a single very long sequence forms its own bucket
   (no padding at all);
3. splits a bucket into chunks so that one SDPA call never holds more than
   ``SDPA_MAX_SCORES_PER_CALL`` attention scores (only matters if SDPA falls back to its math kernel);
4. pads q/k/v of a chunk by gathering rows (padded slots repeat a valid row), masks padded *keys* with a
   broadcast key-padding mask [n, 1, 1, Lk] -- only when kv lengths differ inside the chunk; padded
   *query* rows need no mask, they are simply dropped -- and scatters the valid rows back.

``partitioned_attention`` (windows) on this backend folds the window permutation into those gathers and
scatters, so the rows are copied once on the way in and once on the way out.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .backends import select_backend

__all__ = [
    "dense_attention",
    "varlen_attention",
    "partitioned_attention",
    "naive_attention",
    "SDPA_BUCKET_PAD_RATIO",
    "SDPA_BUCKET_PAD_SLACK",
    "SDPA_MAX_SCORES_PER_CALL",
]

#: A varlen bucket's padded length may be at most this multiple of its shortest member ...
SDPA_BUCKET_PAD_RATIO = 1.25
#: ... or its shortest member plus this many tokens, whichever is larger (keeps tiny windows together).
SDPA_BUCKET_PAD_SLACK = 32
#: Upper bound on n_seq · H · Lq_pad · Lk_pad for one SDPA call of the varlen path.
SDPA_MAX_SCORES_PER_CALL = 1 << 28

Lengths = Union[Sequence[int], torch.Tensor]


# ---------------------------------------------------------------------------------------------- helpers
def _default_scale(head_dim: int, scale: Optional[float]) -> float:
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)


def _as_int_list(lengths: Lengths) -> List[int]:
    if isinstance(lengths, torch.Tensor):
        return [int(v) for v in lengths.tolist()]
    return [int(v) for v in lengths]


def _check_dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"dense attention takes [B, L, H, D] tensors; got {q.shape}, {k.shape}, {v.shape}")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"incompatible q/k/v shapes {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    scale: Optional[float] = None) -> torch.Tensor:
    """Reference attention: ``softmax(Q Kᵀ · scale) V`` with explicit scores, in at least fp32.

    Args:
        q: [B, Lq, H, D]; k, v: [B, Lk, H, D].
        scale: score scale, default 1/√D.

    Returns:
        [B, Lq, H, D] in q's dtype.
    """
    _check_dense(q, k, v)
    compute = torch.promote_types(q.dtype, torch.float32)
    scale = _default_scale(q.shape[-1], scale)
    scores = torch.einsum("blhd,bmhd->bhlm", q.to(compute), k.to(compute)) * scale
    probs = torch.softmax(scores, dim=-1)
    out = torch.einsum("bhlm,bmhd->blhd", probs, v.to(compute))
    return out.to(q.dtype)


def _dense_sdpa(q, k, v, scale: float, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    # SDPA wants [B, H, L, D]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=attn_mask, scale=scale
    )
    return out.transpose(1, 2)


def _dense_flash(q, k, v, scale: float) -> torch.Tensor:
    from flash_attn import flash_attn_func

    return flash_attn_func(q.contiguous(), k.contiguous(), v.contiguous(), softmax_scale=scale)


def _dense_xformers(q, k, v, scale: float) -> torch.Tensor:
    import xformers.ops as xops

    return xops.memory_efficient_attention(q.contiguous(), k.contiguous(), v.contiguous(), scale=scale)


# ---------------------------------------------------------------------------------------------- dense
def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None,
                    backend: Optional[str] = None) -> torch.Tensor:
    """Batched multi-head attention, no mask.

    Args:
        q: [B, Lq, H, D]; k, v: [B, Lk, H, D].
        scale: score scale, default 1/√D.
        backend: explicit backend (overrides ``ATTN_BACKEND``); ``None`` = environment / auto.

    Returns:
        [B, Lq, H, D].
    """
    _check_dense(q, k, v)
    scale = _default_scale(q.shape[-1], scale)
    name = select_backend(q, k, v, backend=backend)
    if name == "flash_attn":
        return _dense_flash(q, k, v, scale)
    if name == "xformers":
        return _dense_xformers(q, k, v, scale)
    if name == "naive":
        return naive_attention(q, k, v, scale)
    return _dense_sdpa(q, k, v, scale)


# ---------------------------------------------------------------------------------------------- varlen
def _check_varlen(q, k, v, q_lens: List[int], kv_lens: List[int]) -> None:
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(f"varlen attention takes packed [ΣL, H, D] tensors; got {q.shape}, {k.shape}, {v.shape}")
    if len(q_lens) != len(kv_lens):
        raise ValueError(f"{len(q_lens)} query lengths but {len(kv_lens)} key/value lengths")
    if sum(q_lens) != q.shape[0] or sum(kv_lens) != k.shape[0] or k.shape != v.shape:
        raise ValueError(
            f"lengths sum to ({sum(q_lens)}, {sum(kv_lens)}) but q has {q.shape[0]} rows, k {k.shape[0]}, v {v.shape[0]}"
        )
    if q.shape[1:] != k.shape[1:]:
        raise ValueError(f"q and k disagree on heads/head dim: {tuple(q.shape)} vs {tuple(k.shape)}")
    if any(lq > 0 and lk <= 0 for lq, lk in zip(q_lens, kv_lens)):
        raise ValueError("a sequence with queries has no keys")


def _cumulative(lengths: List[int]) -> List[int]:
    out, acc = [0], 0
    for n in lengths:
        acc += n
        out.append(acc)
    return out


def _varlen_naive(q, k, v, q_lens, kv_lens, scale):
    qs, ks = _cumulative(q_lens), _cumulative(kv_lens)
    outs = []
    for i, (lq, lk) in enumerate(zip(q_lens, kv_lens)):
        if lq == 0:
            continue
        outs.append(naive_attention(q[None, qs[i]:qs[i + 1]], k[None, ks[i]:ks[i + 1]],
                                    v[None, ks[i]:ks[i + 1]], scale)[0])
    return torch.cat(outs, 0) if outs else q.new_zeros(q.shape)


def _drop_query_less(k, v, q_lens, kv_lens):
    """Remove sequences without queries (and their key/value rows) for the CUDA kernels."""
    if all(n > 0 for n in q_lens):
        return k, v, q_lens, kv_lens
    keep = torch.cat([torch.full((lk,), lq > 0, dtype=torch.bool) for lq, lk in zip(q_lens, kv_lens)])
    keep = keep.to(k.device)
    pairs = [(lq, lk) for lq, lk in zip(q_lens, kv_lens) if lq > 0]
    return k[keep], v[keep], [p[0] for p in pairs], [p[1] for p in pairs]


def _varlen_flash(q, k, v, q_lens, kv_lens, scale):
    from flash_attn import flash_attn_varlen_func

    cu_q = torch.tensor(_cumulative(q_lens), dtype=torch.int32, device=q.device)
    cu_k = torch.tensor(_cumulative(kv_lens), dtype=torch.int32, device=q.device)
    return flash_attn_varlen_func(q.contiguous(), k.contiguous(), v.contiguous(), cu_q, cu_k,
                                  max(q_lens), max(kv_lens), softmax_scale=scale)


def _varlen_xformers(q, k, v, q_lens, kv_lens, scale):
    import xformers.ops as xops
    from xformers.ops import fmha

    mask = fmha.BlockDiagonalMask.from_seqlens(q_lens, kv_lens)
    out = xops.memory_efficient_attention(q[None].contiguous(), k[None].contiguous(), v[None].contiguous(),
                                          attn_bias=mask, scale=scale)
    return out[0]


def _make_buckets(q_lens: List[int], kv_lens: List[int], num_heads: int) -> List[List[int]]:
    """Group sequence indices into SDPA calls (see the module docstring)."""
    order = sorted((i for i in range(len(q_lens)) if q_lens[i] > 0), key=lambda i: (kv_lens[i], q_lens[i]))

    def limit(shortest: int) -> int:
        return max(math.ceil(shortest * SDPA_BUCKET_PAD_RATIO), shortest + SDPA_BUCKET_PAD_SLACK)

    buckets: List[List[int]] = []
    cur: List[int] = []
    min_q = min_k = max_q = max_k = 0
    for i in order:
        lq, lk = q_lens[i], kv_lens[i]
        if cur:
            nq, nk = max(max_q, lq), max(max_k, lk)
            fits = nk <= limit(min_k) and nq <= limit(min(min_q, lq))
            fits = fits and (len(cur) + 1) * num_heads * nq * nk <= SDPA_MAX_SCORES_PER_CALL
            if fits:
                cur.append(i)
                min_q, max_q, max_k = min(min_q, lq), nq, nk
                continue
            buckets.append(cur)
        cur, min_q, max_q, min_k, max_k = [i], lq, lq, lk, lk
    if cur:
        buckets.append(cur)
    return buckets


def _gather_padded(x: torch.Tensor, starts: torch.Tensor, lens: torch.Tensor, pad_len: int,
                   row_map: Optional[torch.Tensor] = None):
    """Rows of n sequences padded to ``pad_len``: returns (padded [n, pad_len, ...], packed row index
    [n, pad_len], valid mask [n, pad_len]). Padded slots repeat the sequence's last row (never read back).
    ``row_map`` [ΣL] maps a packed row to its row in ``x`` (a permutation fused into the gather)."""
    pos = torch.arange(pad_len, device=x.device)
    valid = pos[None, :] < lens[:, None]
    idx = starts[:, None] + torch.minimum(pos[None, :], lens[:, None] - 1)
    src = idx if row_map is None else row_map[idx]
    return x.index_select(0, src.reshape(-1)).view(len(starts), pad_len, *x.shape[1:]), idx, valid


def _varlen_sdpa(q, k, v, q_lens, kv_lens, scale, row_map: Optional[torch.Tensor] = None):
    """SDPA varlen (module docstring). With ``row_map``, packed row i of q/k/v is row ``row_map[i]`` of
    the given tensors and the output is returned in the given tensors' row order."""
    n_seq = len(q_lens)
    if row_map is None and len(set(q_lens)) == 1 and len(set(kv_lens)) == 1 and q_lens[0] > 0:
        out = _dense_sdpa(q.view(n_seq, q_lens[0], *q.shape[1:]), k.view(n_seq, kv_lens[0], *k.shape[1:]),
                          v.view(n_seq, kv_lens[0], *v.shape[1:]), scale)
        return out.reshape(q.shape)
    device = q.device
    q_starts, kv_starts = _cumulative(q_lens), _cumulative(kv_lens)
    values, rows = [], []
    for bucket in _make_buckets(q_lens, kv_lens, q.shape[1]):
        lq = torch.tensor([q_lens[i] for i in bucket], device=device)
        lk = torch.tensor([kv_lens[i] for i in bucket], device=device)
        sq = torch.tensor([q_starts[i] for i in bucket], device=device)
        sk = torch.tensor([kv_starts[i] for i in bucket], device=device)
        pad_q = max(q_lens[i] for i in bucket)
        pad_k = max(kv_lens[i] for i in bucket)
        qb, q_idx, q_valid = _gather_padded(q, sq, lq, pad_q, row_map)
        kb, _, k_valid = _gather_padded(k, sk, lk, pad_k, row_map)
        vb, _, _ = _gather_padded(v, sk, lk, pad_k, row_map)
        mask = None
        if min(kv_lens[i] for i in bucket) != pad_k:
            mask = k_valid[:, None, None, :]  # [n, 1(heads), 1(queries), Lk]: True = attend
        ob = _dense_sdpa(qb, kb, vb, scale, attn_mask=mask)
        values.append(ob[q_valid])
        rows.append(q_idx[q_valid])
    rows = torch.cat(rows)
    if row_map is not None:
        rows = row_map[rows]
    return torch.empty_like(q).index_copy_(0, rows, torch.cat(values))


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_seqlens: Lengths,
                     kv_seqlens: Lengths, scale: Optional[float] = None,
                     backend: Optional[str] = None) -> torch.Tensor:
    """Attention over packed sequences of different lengths (sequence i's queries see only its keys).

    Args:
        q: [ΣLq, H, D] packed queries.
        k, v: [ΣLk, H, D] packed keys / values.
        q_seqlens, kv_seqlens: per-sequence lengths (python ints preferred; a tensor is read once).
            A sequence may have zero queries; one with queries needs at least one key.
        scale: score scale, default 1/√D.
        backend: explicit backend (overrides ``ATTN_BACKEND``).

    Returns:
        [ΣLq, H, D] in q's row order.
    """
    q_lens, kv_lens = _as_int_list(q_seqlens), _as_int_list(kv_seqlens)
    _check_varlen(q, k, v, q_lens, kv_lens)
    if q.shape[0] == 0:
        return q.new_zeros(q.shape)
    scale = _default_scale(q.shape[-1], scale)
    name = select_backend(q, k, v, backend=backend)
    if name in ("flash_attn", "xformers"):
        k, v, q_lens, kv_lens = _drop_query_less(k, v, q_lens, kv_lens)
        run = _varlen_flash if name == "flash_attn" else _varlen_xformers
        return run(q, k, v, q_lens, kv_lens, scale)
    if name == "naive":
        return _varlen_naive(q, k, v, q_lens, kv_lens, scale)
    return _varlen_sdpa(q, k, v, q_lens, kv_lens, scale)


def partitioned_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          fwd_perm: Optional[torch.Tensor], bwd_perm: Optional[torch.Tensor],
                          seqlens: Lengths, scale: Optional[float] = None,
                          backend: Optional[str] = None) -> torch.Tensor:
    """Self-attention inside groups of rows given by a partition (e.g. ``window_partition``).

    Rows ``q[fwd_perm]`` are the groups laid end to end with lengths ``seqlens``; the result is put back
    in the original row order with ``bwd_perm``. ``fwd_perm=None`` means the rows are already grouped
    (contiguous segments), e.g. one segment per batch item or per several consecutive batch entries.

    Args:
        q, k, v: [N, H, D] rows in the caller's order.
        fwd_perm, bwd_perm: [N] long permutations (inverse of each other) or both ``None``.
        seqlens: segment lengths, summing to N.

    Returns:
        [N, H, D] in the original row order.
    """
    lens = _as_int_list(seqlens)
    if q.shape[0] == 0:
        return q.new_zeros(q.shape)
    if fwd_perm is not None and select_backend(q, k, v, backend=backend) == "sdpa":
        # fuse the permutation into the bucket gather / scatter (one copy each way instead of three)
        _check_varlen(q, k, v, lens, lens)
        return _varlen_sdpa(q, k, v, lens, lens, _default_scale(q.shape[-1], scale), row_map=fwd_perm)
    if fwd_perm is not None:
        q, k, v = q.index_select(0, fwd_perm), k.index_select(0, fwd_perm), v.index_select(0, fwd_perm)
    out = varlen_attention(q, k, v, lens, lens, scale=scale, backend=backend)
    if bwd_perm is not None:
        out = out.index_select(0, bwd_perm)
    return out

"""Generic N-D submanifold convolution in pure PyTorch (exact; any device, any dtype).

Nothing here knows about 3D or about ``SparseTensor``: sites are rows of an integer key table
``keys [N, D]`` (for 3D: coords (batch, x, y, z), D = 4; for 4D: (sample, t, x, y, z), D = 5),
and a kernel is a list of integer offsets ``offsets [K, D]`` (0 on the batch/sample column).

Building blocks
---------------
``kernel_offsets(kernel_size, dilation)``
    -> LongTensor [K, len(kernel_size)], K = prod(kernel_size). Row-major over the kernel axes
    (last axis fastest), i.e. the same flattening order as spconv's weight layout
    ``[out, k_0, ..., k_{m-1}, in]``: ``weight.reshape(out, K, in)[:, k]`` is the tap at
    ``kernel_offsets(...)[k]``. Offset along axis i = (j_i - kernel_size_i // 2) * dilation_i.
``pad_offsets(offsets, leading=1)``
    prepends zero columns (e.g. the batch column) -> [K, D].
``encode_keys(keys)`` / ``decode_keys(codes, spec)``
    order-preserving int64 mixed-radix codes of key rows (lexicographic order of rows == numeric
    order of codes).
``build_neighbor_map(keys, offsets)``
    -> LongTensor [N, K]: ``nbr[i, k] = j`` iff ``keys[j] == keys[i] + offsets[k]``, else -1.
``submanifold_conv(feats, neighbor_map, weight, bias)``
    out[i] = bias + sum_k W_k . feats[nbr[i, k]] over the taps present (cross-correlation;
    the output sites are the input sites, in the same row order).

Hashing is sort + searchsorted over the int64 codes, so it is deterministic and exact.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import torch

__all__ = [
    "KeySpec",
    "NeighborMap",
    "kernel_offsets",
    "pad_offsets",
    "encode_keys",
    "decode_keys",
    "build_neighbor_map",
    "submanifold_conv",
    "MISSING",
    "HALF_DTYPES",
    "per_axis",
    "same_keys",
]

MISSING = -1
"""Value of an absent neighbour in a neighbour map."""

_INT64_CODE_LIMIT = 2 ** 62
"""Largest allowed product of key extents (headroom below 2**63 for code + offset arithmetic)."""

HALF_DTYPES = (torch.float16, torch.bfloat16)
"""Feature dtypes whose sums (conv taps, pooling) are accumulated in float32."""


# ----------------------------------------------------------------------------------------- keys
@dataclass(frozen=True)
class KeySpec:
    """Mixed-radix encoding of integer key rows.

    ``code = sum_i (key_i - low_i) * stride_i`` with ``extent_i = high_i - low_i + 1`` and
    row-major strides (last column fastest), so codes sort like the rows do lexicographically.
    """

    low: Tuple[int, ...]
    extent: Tuple[int, ...]
    stride: Tuple[int, ...]

    def tensors(self, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(low, extent, stride) as int64 tensors on ``device`` (each [D])."""
        as_t = lambda v: torch.tensor(v, dtype=torch.long, device=device)  # noqa: E731
        return as_t(self.low), as_t(self.extent), as_t(self.stride)


def _spec_from_bounds(low: Sequence[int], high: Sequence[int]) -> KeySpec:
    extent = [int(h) - int(l) + 1 for l, h in zip(low, high)]
    stride, total = [0] * len(extent), 1
    for i in reversed(range(len(extent))):
        stride[i] = total
        total *= extent[i]
    if total >= _INT64_CODE_LIMIT:
        raise OverflowError(f"key extents {extent} are too large for int64 codes")
    return KeySpec(tuple(int(v) for v in low), tuple(extent), tuple(stride))


def encode_keys(keys: torch.Tensor, spec: Optional[KeySpec] = None) -> Tuple[torch.Tensor, KeySpec]:
    """Encode integer key rows as order-preserving int64 codes.

    Args:
        keys: [N, D] integer tensor.
        spec: encoding to use (default: the tight bounds of ``keys``). Rows outside the spec's
            box get meaningless codes; callers must mask them.
    Returns:
        (codes [N] int64, spec).
    """
    if keys.dim() != 2:
        raise ValueError(f"keys must be [N, D]; got {tuple(keys.shape)}")
    keys = keys.long()
    if spec is None:
        if keys.shape[0] == 0:
            spec = _spec_from_bounds([0] * keys.shape[1], [0] * keys.shape[1])
        else:
            spec = _spec_from_bounds(keys.min(0).values.tolist(), keys.max(0).values.tolist())
    low, _, stride = spec.tensors(keys.device)
    return ((keys - low) * stride).sum(1), spec


def decode_keys(codes: torch.Tensor, spec: KeySpec) -> torch.Tensor:
    """Inverse of :func:`encode_keys`: codes [N] -> keys [N, D] int64."""
    low, extent, stride = spec.tensors(codes.device)
    return torch.div(codes.long().unsqueeze(1), stride, rounding_mode="floor") % extent + low


# -------------------------------------------------------------------------------------- offsets
def per_axis(v: Union[int, Sequence[int]], n: int, name: str) -> Tuple[int, ...]:
    """``v`` as ``n`` ints (an int is broadcast); ValueError naming ``name`` on a wrong length."""
    if isinstance(v, int):
        return (v,) * n
    v = tuple(int(i) for i in v)
    if len(v) != n:
        raise ValueError(f"{name} needs {n} values; got {v}")
    return v


def kernel_offsets(
    kernel_size: Sequence[int], dilation: Union[int, Sequence[int]] = 1, device=None
) -> torch.Tensor:
    """Offsets of a centred kernel, flattened row-major like spconv's weight layout.

    Args:
        kernel_size: per-axis kernel size (odd sizes are centred; for an even size the centre is
            taken at ``k // 2``).
        dilation: per-axis dilation (int broadcasts).
    Returns:
        LongTensor [K, m], K = prod(kernel_size), m = len(kernel_size); row k is the offset of
        kernel index ``numpy.unravel_index(k, kernel_size)`` (last axis fastest).

    Example: kernel (3, 1, 1, 1) over (t, x, y, z) gives offsets t in {-1, 0, 1}, matching a
    spconv weight ``[out, 3, 1, 1, 1, in]``.
    """
    kernel_size = tuple(int(k) for k in kernel_size)
    dilation = per_axis(dilation, len(kernel_size), "dilation")
    axes = [[(j - k // 2) * d for j in range(k)] for k, d in zip(kernel_size, dilation)]
    rows = list(itertools.product(*axes))  # itertools.product is row-major: last axis fastest
    return torch.tensor(rows, dtype=torch.long, device=device).reshape(len(rows), len(kernel_size))


def pad_offsets(offsets: torch.Tensor, leading: int = 1) -> torch.Tensor:
    """Prepend ``leading`` zero columns (batch/sample columns that a kernel never moves along)."""
    zeros = offsets.new_zeros(offsets.shape[0], leading)
    return torch.cat([zeros, offsets], dim=1)


# ---------------------------------------------------------------------------------- neighbours
@dataclass
class NeighborMap:
    """A neighbour table plus lazily derived per-tap (output, input) row lists.

    Attributes:
        table: LongTensor [N, K]; ``table[i, k]`` is the row of site ``i + offsets[k]`` or -1.
        source: optional reference to the key/coords tensor it was built from (cache validation).
    """

    table: torch.Tensor
    source: Optional[torch.Tensor] = None
    _pairs: Optional[List[Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]]] = field(
        default=None, repr=False
    )

    @property
    def num_sites(self) -> int:
        return self.table.shape[0]

    @property
    def num_taps(self) -> int:
        return self.table.shape[1]

    def pairs(self) -> List[Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]]:
        """Per tap k: ``(out_rows, in_rows)`` LongTensors [M_k] with ``table[out_rows, k] == in_rows``.

        ``(None, None)`` marks an identity tap (every site is its own neighbour: the centre of a
        submanifold kernel), computed as a dense matmul without gather/scatter.
        """
        if self._pairs is None:
            n = self.table.shape[0]
            arange = torch.arange(n, device=self.table.device)
            pairs = []
            for k in range(self.table.shape[1]):
                col = self.table[:, k]
                if n > 0 and torch.equal(col, arange):
                    pairs.append((None, None))
                    continue
                out_rows = torch.nonzero(col >= 0).squeeze(1)
                pairs.append((out_rows, col[out_rows]))
            self._pairs = pairs
        return self._pairs

    def matches(self, source: torch.Tensor) -> bool:
        """Whether this map was built from keys equal to ``source``."""
        return self.source is not None and same_keys(self.source, source)


def same_keys(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two key / coords tensors are equal (identity first, then shape, device, values)."""
    return a is b or (a.shape == b.shape and a.device == b.device and torch.equal(a, b))


def build_neighbor_map(keys: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Neighbour table of a set of integer sites.

    Args:
        keys: [N, D] integer site keys, all rows distinct (e.g. coords (batch, x, y, z)).
        offsets: [K, D] integer offsets (e.g. ``pad_offsets(kernel_offsets((3, 3, 3)))``).
    Returns:
        LongTensor [N, K] with ``out[i, k] = j`` iff ``keys[j] == keys[i] + offsets[k]``,
        else -1 (:data:`MISSING`).
    Raises:
        ValueError: on duplicate keys or mismatched D.
    """
    if keys.dim() != 2 or offsets.dim() != 2 or keys.shape[1] != offsets.shape[1]:
        raise ValueError(
            f"keys [N, D] and offsets [K, D] must agree on D; got {tuple(keys.shape)} and {tuple(offsets.shape)}"
        )
    n, k_taps = keys.shape[0], offsets.shape[0]
    device = keys.device
    out = torch.full((n, k_taps), MISSING, dtype=torch.long, device=device)
    if n == 0 or k_taps == 0:
        return out
    keys = keys.long()
    offsets = offsets.long().to(device)
    codes, spec = encode_keys(keys)
    sorted_codes, perm = torch.sort(codes)
    if n > 1 and bool((sorted_codes[1:] == sorted_codes[:-1]).any()):
        raise ValueError("build_neighbor_map: keys contain duplicate rows")
    low, extent, stride = spec.tensors(device)
    rel = keys - low  # [N, D] in [0, extent)
    offsets_cpu = offsets.cpu().tolist()
    for k, off in enumerate(offsets_cpu):
        # the code of keys + off is codes + <off, stride> when every moved axis stays in range
        delta = sum(o * s for o, s in zip(off, spec.stride))
        query = codes + delta
        valid = None
        for axis, o in enumerate(off):
            if o == 0:
                continue
            moved = rel[:, axis] + o
            ok = (moved >= 0) & (moved < spec.extent[axis])
            valid = ok if valid is None else valid & ok
        pos = torch.searchsorted(sorted_codes, query).clamp_(max=n - 1)
        found = sorted_codes[pos] == query
        if valid is not None:
            found &= valid
        out[:, k] = torch.where(found, perm[pos], out.new_full((), MISSING))
    return out


# ----------------------------------------------------------------------------------------- conv
def _taps_weight(weight: torch.Tensor, num_taps: int, weight_layout: str) -> torch.Tensor:
    """Bring a weight to [K, Cin, Cout]."""
    if weight_layout == "kio":
        if weight.dim() != 3 or weight.shape[0] != num_taps:
            raise ValueError(f"'kio' weight must be [K={num_taps}, Cin, Cout]; got {tuple(weight.shape)}")
        return weight
    if weight_layout == "spconv":
        c_out, c_in = weight.shape[0], weight.shape[-1]
        if weight.numel() != c_out * num_taps * c_in:
            raise ValueError(
                f"spconv weight [Cout, *kernel, Cin] with prod(kernel) = K = {num_taps} expected; "
                f"got {tuple(weight.shape)}"
            )
        return weight.reshape(c_out, num_taps, c_in).permute(1, 2, 0)
    raise ValueError(f"weight_layout must be 'spconv' or 'kio'; got {weight_layout!r}")


def _conv_forward(feats: torch.Tensor, w: torch.Tensor, nmap: NeighborMap, acc_dtype) -> torch.Tensor:
    """sum over taps of gathered feats @ W_k, accumulated in ``acc_dtype``: [N, Cout]."""
    out: Optional[torch.Tensor] = None
    pairs = nmap.pairs()
    # identity taps first: their dense matmul initialises the accumulator without a zero fill
    for k, (out_rows, _) in enumerate(pairs):
        if out_rows is None:
            y = (feats @ w[k]).to(acc_dtype)
            out = y if out is None else out + y
    if out is None:
        out = feats.new_zeros((feats.shape[0], w.shape[2]), dtype=acc_dtype)
    for k, (out_rows, in_rows) in enumerate(pairs):
        if out_rows is None or out_rows.numel() == 0:
            continue
        out.index_add_(0, out_rows, (feats.index_select(0, in_rows) @ w[k]).to(acc_dtype))
    return out


class _SubmanifoldConvFn(torch.autograd.Function):
    """Gather-matmul-scatter with a hand-written backward.

    Autograd through per-tap ``index_select`` / ``w[k]`` would allocate a full [N, Cin] and a
    full [K, Cin, Cout] zero gradient per tap; this backward accumulates in place instead and
    saves only feats and the weight (not the gathered rows).
    """

    @staticmethod
    def forward(ctx, feats, w, nmap, acc_dtype):
        ctx.save_for_backward(feats, w)
        ctx.nmap, ctx.acc_dtype = nmap, acc_dtype
        return _conv_forward(feats, w, nmap, acc_dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        feats, w = ctx.saved_tensors
        nmap, acc_dtype = ctx.nmap, ctx.acc_dtype
        grad_out = grad_out.to(feats.dtype)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = feats.new_zeros(feats.shape, dtype=acc_dtype) if need_x else None
        grad_w = torch.zeros_like(w, dtype=acc_dtype) if need_w else None
        for k, (out_rows, in_rows) in enumerate(nmap.pairs()):
            if out_rows is None:  # identity tap
                g, x = grad_out, feats
                if need_x:
                    grad_x += (g @ w[k].t()).to(acc_dtype)
            else:
                if out_rows.numel() == 0:
                    continue
                g = grad_out.index_select(0, out_rows)
                if need_x:
                    grad_x.index_add_(0, in_rows, (g @ w[k].t()).to(acc_dtype))
                x = feats.index_select(0, in_rows) if need_w else None
            if need_w:
                grad_w[k] += (x.t() @ g).to(acc_dtype)
        return (
            None if grad_x is None else grad_x.to(feats.dtype),
            None if grad_w is None else grad_w.to(w.dtype),
            None,
            None,
        )


def submanifold_conv(
    feats: torch.Tensor,
    neighbor_map: Union[torch.Tensor, NeighborMap],
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    weight_layout: str = "spconv",
) -> torch.Tensor:
    """Submanifold (site-preserving) sparse convolution by gather - matmul - scatter-add.

    ``out[i] = bias + sum_k feats[nbr[i, k]] @ W_k`` over the taps with ``nbr[i, k] >= 0``.

    Args:
        feats: [N, Cin] features of the sites of the neighbour map.
        neighbor_map: [N, K] table from :func:`build_neighbor_map`, or a :class:`NeighborMap`
            (whose per-tap row lists are then computed once and reused).
        weight: ``weight_layout="spconv"``: [Cout, k_0, ..., k_{m-1}, Cin] (or any shape
            [Cout, ..., Cin] with K entries in between, e.g. [Cout, K, Cin]); tap k is
            ``weight.reshape(Cout, K, Cin)[:, k, :]``. ``weight_layout="kio"``: [K, Cin, Cout].
            Cast to ``feats.dtype``.
        bias: optional [Cout].
    Returns:
        [N, Cout] in ``feats.dtype``. Products are computed in ``feats.dtype``; for fp16/bf16
        the sums over taps are accumulated in float32. Differentiable w.r.t. feats, weight and
        bias (first order).

    Memory: one tap at a time, so the peak extra memory is about max_k M_k * (Cin + Cout)
    elements (M_k = sites having neighbour k), never [N, K, Cin]; backward saves only feats
    and the weight.
    """
    nmap = neighbor_map if isinstance(neighbor_map, NeighborMap) else NeighborMap(neighbor_map)
    if feats.dim() != 2 or feats.shape[0] != nmap.num_sites:
        raise ValueError(f"feats must be [N={nmap.num_sites}, Cin]; got {tuple(feats.shape)}")
    w = _taps_weight(weight, nmap.num_taps, weight_layout).to(feats.dtype)  # [K, Cin, Cout]
    if w.shape[1] != feats.shape[1]:
        raise ValueError(f"weight expects Cin = {w.shape[1]}, feats have {feats.shape[1]}")
    w = w.contiguous()
    acc_dtype = torch.float32 if feats.dtype in HALF_DTYPES else feats.dtype
    out = _SubmanifoldConvFn.apply(feats, w, nmap, acc_dtype)
    if bias is not None:
        out = out + bias.to(acc_dtype)
    return out.to(feats.dtype)

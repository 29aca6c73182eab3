"""Attention backends, varlen bucketing, window partitions and the attention layers.

Every backend usable here is compared with the explicit ``naive`` reference; on a CPU-only machine that
is ``sdpa`` (the CUDA backends are exercised automatically when the tests run on a GPU machine).
"""
from __future__ import annotations

import math
import random
from collections import defaultdict

import pytest
import torch

from trellis_ext.attention import (
    MultiHeadAttention,
    MultiHeadRMSNorm,
    SparseMultiHeadAttention,
    available_backends,
    dense_attention,
    naive_attention,
    partition_cache_key,
    select_backend,
    sparse_windowed_self_attention,
    varlen_attention,
    window_partition,
)
from trellis_ext.attention import functional as attn_functional
from trellis_ext.sparse import SparseTensor

ATOL = 2e-5
HALF_ATOL = 2e-2
UNEQUAL_LENGTHS = [3, 5000, 17]


def _device_dtypes():
    out = [("cpu", torch.float32)]
    if torch.cuda.is_available():
        out += [("cuda", torch.float16), ("cuda", torch.bfloat16)]
    return out


def _backend_cases():
    cases = []
    for device, dtype in _device_dtypes():
        probe = torch.zeros(1, device=device, dtype=dtype)
        for name in available_backends(probe):
            if name != "naive":
                cases.append(pytest.param(name, device, dtype, id=f"{name}-{device}-{str(dtype)[6:]}"))
    return cases


def _atol(dtype):
    return ATOL if dtype == torch.float32 else HALF_ATOL


def _rand(*shape, device="cpu", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)


def _naive_varlen(q, k, v, q_lens, kv_lens):
    """Per-sequence loop over the explicit reference."""
    out, qs, ks = [], 0, 0
    for lq, lk in zip(q_lens, kv_lens):
        if lq:
            out.append(naive_attention(q[None, qs:qs + lq], k[None, ks:ks + lk], v[None, ks:ks + lk])[0])
        qs, ks = qs + lq, ks + lk
    return torch.cat(out)


# ------------------------------------------------------------------------------------------ backends
@pytest.mark.filterwarnings("ignore:attention backend")
def test_backend_selection_on_cpu(monkeypatch):
    q = torch.zeros(1, 2, 1, 4)
    monkeypatch.delenv("ATTN_BACKEND", raising=False)
    assert select_backend(q) == "sdpa"
    monkeypatch.setenv("ATTN_BACKEND", "naive")
    assert select_backend(q) == "naive"
    monkeypatch.setenv("ATTN_BACKEND", "flash_attn")  # unusable on CPU -> sdpa, never an error
    with pytest.warns(RuntimeWarning):
        assert select_backend(q, backend="xformers") == "sdpa"
    assert select_backend(q) == "sdpa"
    monkeypatch.setenv("ATTN_BACKEND", "bogus")
    with pytest.raises(ValueError):
        select_backend(q)
    assert "sdpa" in available_backends(q) and "naive" in available_backends(q)


def test_backend_env_read_at_call_time(monkeypatch):
    q, k, v = (_rand(2, 7, 2, 8, seed=s) for s in range(3))
    calls = []
    orig = attn_functional.naive_attention
    monkeypatch.setattr(attn_functional, "naive_attention", lambda *a: calls.append(1) or orig(*a))
    monkeypatch.setenv("ATTN_BACKEND", "sdpa")
    a = dense_attention(q, k, v)
    assert not calls
    monkeypatch.setenv("ATTN_BACKEND", "naive")
    b = dense_attention(q, k, v)
    assert calls
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------ numerics
@pytest.mark.parametrize("backend,device,dtype", _backend_cases())
def test_dense_matches_naive(backend, device, dtype):
    q = _rand(3, 37, 4, 16, device=device, dtype=dtype, seed=1)
    k = _rand(3, 53, 4, 16, device=device, dtype=dtype, seed=2)
    v = _rand(3, 53, 4, 16, device=device, dtype=dtype, seed=3)
    out = dense_attention(q, k, v, backend=backend)
    assert out.shape == q.shape and out.dtype == dtype
    torch.testing.assert_close(out.float(), naive_attention(q, k, v).float(), atol=_atol(dtype), rtol=0)


def test_naive_is_softmax_formula():
    q, k, v = _rand(1, 5, 1, 4, seed=1), _rand(1, 6, 1, 4, seed=2), _rand(1, 6, 1, 4, seed=3)
    scores = q[0, :, 0] @ k[0, :, 0].T / math.sqrt(4)
    expected = torch.softmax(scores, -1) @ v[0, :, 0]
    torch.testing.assert_close(naive_attention(q, k, v)[0, :, 0], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("backend,device,dtype", _backend_cases())
def test_varlen_very_unequal_self(backend, device, dtype):
    n, heads, dim = sum(UNEQUAL_LENGTHS), 2, 8
    q, k, v = (_rand(n, heads, dim, device=device, dtype=dtype, seed=s) for s in range(3))
    out = varlen_attention(q, k, v, UNEQUAL_LENGTHS, UNEQUAL_LENGTHS, backend=backend)
    ref = _naive_varlen(q, k, v, UNEQUAL_LENGTHS, UNEQUAL_LENGTHS)
    assert out.shape == q.shape
    torch.testing.assert_close(out.float(), ref.float(), atol=_atol(dtype), rtol=0)


@pytest.mark.parametrize("backend,device,dtype", _backend_cases())
@pytest.mark.parametrize("kv_lens", [[6, 6, 6, 6, 6], [7, 1, 300, 40, 2]], ids=["ctx-equal", "ctx-unequal"])
def test_varlen_cross(backend, device, dtype, kv_lens):
    q_lens = [3, 700, 17, 0, 1]  # includes a sequence without queries
    heads, dim = 2, 8
    q = _rand(sum(q_lens), heads, dim, device=device, dtype=dtype, seed=4)
    k = _rand(sum(kv_lens), heads, dim, device=device, dtype=dtype, seed=5)
    v = _rand(sum(kv_lens), heads, dim, device=device, dtype=dtype, seed=6)
    out = varlen_attention(q, k, v, q_lens, kv_lens, backend=backend)
    torch.testing.assert_close(out.float(), _naive_varlen(q, k, v, q_lens, kv_lens).float(),
                               atol=_atol(dtype), rtol=0)


def test_varlen_sdpa_gradients_match_naive():
    lens_q, lens_k = [5, 40, 1, 13], [9, 2, 40, 13]
    qs = _rand(sum(lens_q), 2, 8, seed=1).requires_grad_()
    ks = _rand(sum(lens_k), 2, 8, seed=2).requires_grad_()
    vs = _rand(sum(lens_k), 2, 8, seed=3).requires_grad_()
    w = _rand(sum(lens_q), 2, 8, seed=4)
    grads = []
    for backend in ("sdpa", "naive"):
        (varlen_attention(qs, ks, vs, lens_q, lens_k, backend=backend) * w).sum().backward()
        grads.append([t.grad.clone() for t in (qs, ks, vs)])
        for t in (qs, ks, vs):
            t.grad = None
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_varlen_sdpa_does_not_pad_to_longest(monkeypatch):
    """The SDPA path pads each bucket within its bound, never everything to the 5000-token sequence."""
    shapes = []
    orig = attn_functional._dense_sdpa
    monkeypatch.setattr(attn_functional, "_dense_sdpa",
                        lambda q, k, v, scale, attn_mask=None: shapes.append((q.shape, k.shape)) or
                        orig(q, k, v, scale, attn_mask))
    rng = random.Random(0)
    lens = UNEQUAL_LENGTHS + [rng.randint(1, 600) for _ in range(40)]
    q = _rand(sum(lens), 2, 8)
    out = varlen_attention(q, q, q, lens, lens, backend="sdpa")
    torch.testing.assert_close(out, _naive_varlen(q, q, q, lens, lens), atol=ATOL, rtol=0)
    padded = sum(s[0] * s[1] for s, _ in shapes)
    assert sum(q_shape[0] for q_shape, _ in shapes) == len(lens)
    # every bucket's padded length is within max(1.25·shortest, shortest + 32) -> bounded total waste
    bound = sum(max(math.ceil(n * attn_functional.SDPA_BUCKET_PAD_RATIO), n + attn_functional.SDPA_BUCKET_PAD_SLACK)
                for n in lens)
    assert padded <= bound < len(lens) * max(lens) / 4
    # the 5000-token sequence is attended alone, unpadded
    assert any(s[0] == 1 and s[1] == 5000 for s, _ in shapes)


def test_varlen_equal_lengths_fast_path_and_errors():
    q = _rand(4 * 9, 2, 8)
    torch.testing.assert_close(varlen_attention(q, q, q, [9] * 4, [9] * 4, backend="sdpa"),
                               _naive_varlen(q, q, q, [9] * 4, [9] * 4), atol=ATOL, rtol=0)
    with pytest.raises(ValueError):
        varlen_attention(q, q, q, [9, 9], [9, 9])
    with pytest.raises(ValueError):
        varlen_attention(q, q[:27], q[:27], [9, 9, 9, 9], [9, 9, 9, 0])


def test_flash_varlen_glue_with_stand_in(monkeypatch):
    """CPU check of the flash-attn call: int32 cu_seqlens, max lengths, scale, query-less sequences dropped.
    The stand-in implements flash_attn_varlen_func's documented contract with the naive reference."""
    import sys
    import types

    seen = {}

    def flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, max_k, softmax_scale=None, **_):
        seen.update(dtype=cu_q.dtype, max_q=max_q, max_k=max_k, scale=softmax_scale)
        lq, lk = torch.diff(cu_q).tolist(), torch.diff(cu_k).tolist()
        assert max_q == max(lq) and max_k == max(lk)
        return _naive_varlen(q, k, v, lq, lk)

    monkeypatch.setitem(sys.modules, "flash_attn", types.SimpleNamespace(flash_attn_varlen_func=flash_attn_varlen_func))
    q_lens, kv_lens = [4, 0, 9], [3, 5, 11]
    q, k, v = _rand(13, 2, 8, seed=1), _rand(19, 2, 8, seed=2), _rand(19, 2, 8, seed=3)
    k2, v2, lq, lk = attn_functional._drop_query_less(k, v, q_lens, kv_lens)
    assert lq == [4, 9] and lk == [3, 11] and torch.equal(k2, torch.cat([k[:3], k[8:]]))
    out = attn_functional._varlen_flash(q, k2, v2, lq, lk, 0.25)
    assert seen == dict(dtype=torch.int32, max_q=9, max_k=11, scale=0.25)
    torch.testing.assert_close(out, _naive_varlen(q, k2, v2, lq, lk), atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------ windows
def _brute_force_windows(coords, sizes, shifts, group):
    windows = defaultdict(list)
    for i, row in enumerate(coords.tolist()):
        key = tuple(math.floor((c + s) / w) for c, s, w in zip(row, shifts, sizes))
        windows[(group[i] if group is not None else 0,) + key].append(i)
    return [windows[key] for key in sorted(windows)]


@pytest.mark.parametrize("ncols,sizes,shifts,with_group", [
    (3, (8, 8, 8), (0, 0, 0), True),
    (3, (8, 8, 8), (4, 4, 4), True),
    (2, (3, 5), (1, -2), False),
    (4, (2, 8, 8, 8), (1, 4, 4, 4), True),
])
def test_window_partition_matches_brute_force(ncols, sizes, shifts, with_group):
    g = torch.Generator().manual_seed(ncols)
    n = 400
    coords = torch.randint(-5, 30, (n, ncols), generator=g, dtype=torch.int32)
    group = torch.randint(0, 3, (n,), generator=g) if with_group else None
    fwd, bwd, seqlens = window_partition(coords, sizes, shifts, group)
    expected = _brute_force_windows(coords, sizes, shifts, None if group is None else group.tolist())
    assert seqlens == [len(w) for w in expected]
    assert fwd.tolist() == [i for w in expected for i in w]  # window order and stable order inside
    assert torch.equal(fwd[bwd], torch.arange(n)) and torch.equal(bwd[fwd], torch.arange(n))


def test_window_partition_broadcasts_int_and_handles_empty():
    coords = torch.tensor([[0, 0, 0], [9, 0, 0], [1, 1, 1]])
    fwd, _, seqlens = window_partition(coords, 8, 0)
    assert fwd.tolist() == [0, 2, 1] and seqlens == [2, 1]
    fwd, bwd, seqlens = window_partition(coords[:0], 8, 0)
    assert fwd.numel() == 0 and seqlens == []


def _shell_tensor(batch=2, res=24, channels=(3, 2, 8), seed=0):
    """Sparse tensor of sphere shells (same xyz in every batch item) with feats [N, *channels]."""
    ax = torch.arange(res)
    grid = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    r = (grid.float() - (res - 1) / 2).norm(dim=1)
    xyz = grid[(r > res * 0.3) & (r < res * 0.3 + 1.5)]
    coords = torch.cat([torch.cat([torch.full((len(xyz), 1), b), xyz], 1) for b in range(batch)])
    return SparseTensor(_rand(len(coords), *channels, seed=seed), coords.int())


def test_swin_windows_never_cross_batch_items():
    x = _shell_tensor()
    for shift in (0, 4):
        fwd, _, seqlens = window_partition(x.coords[:, 1:], (8, 8, 8), (shift,) * 3, group=x.coords[:, 0])
        batch = x.coords[fwd, 0].split(seqlens)
        assert all(len(set(b.tolist())) == 1 for b in batch)
    # changing item 1 does not move item 0's output
    out_a = sparse_windowed_self_attention(x, 8, 4).feats
    feats = x.feats.clone()
    feats[x.layout[1]] += 1.0
    out_b = sparse_windowed_self_attention(x.replace(feats), 8, 4).feats
    torch.testing.assert_close(out_a[x.layout[0]], out_b[x.layout[0]], atol=0, rtol=0)
    assert not torch.allclose(out_a[x.layout[1]], out_b[x.layout[1]])


@pytest.mark.parametrize("shift", [0, 4, (1, 2, 3)])
def test_sparse_windowed_attention_equals_per_window_naive(shift):
    x = _shell_tensor(res=18)
    out = sparse_windowed_self_attention(x, 8, shift)
    assert out.feats.shape == (x.feats.shape[0], 2, 8)
    shifts = (shift,) * 3 if isinstance(shift, int) else shift
    windows = _brute_force_windows(x.coords[:, 1:], (8, 8, 8), shifts, x.coords[:, 0].tolist())
    assert len(windows) > 10
    expected = torch.empty_like(out.feats)
    for rows in windows:
        idx = torch.tensor(rows)
        q, k, v = x.feats[idx].unbind(1)
        expected[idx] = naive_attention(q[None], k[None], v[None])[0]
    torch.testing.assert_close(out.feats, expected, atol=ATOL, rtol=0)
    assert x.get_spatial_cache(partition_cache_key(8, shift)) is not None


def test_windowed_attention_gradients_match_naive():
    x = _shell_tensor(res=12)
    grads = []
    for backend in ("sdpa", "naive"):
        feats = x.feats.clone().requires_grad_()
        out = sparse_windowed_self_attention(x.replace(feats), 6, 3, backend=backend).feats
        (out * _rand(*out.shape, seed=9)).sum().backward()
        grads.append(feats.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------ modules
def test_rms_norm_formula():
    norm = MultiHeadRMSNorm(8, 3)
    with torch.no_grad():
        norm.gamma.copy_(_rand(3, 8, seed=7))
    x = _rand(5, 3, 8, seed=8)
    expected = x / x.norm(dim=-1, keepdim=True) * norm.gamma * math.sqrt(8)
    torch.testing.assert_close(norm(x), expected, atol=1e-6, rtol=1e-6)
    assert norm(x.half()).dtype == torch.float16
    assert dict(norm.named_parameters())["gamma"].shape == (3, 8)


def _randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.dim() == 2 and p.shape[0] < 8 else 0.0))
    return module


def _split_heads(t, heads):
    return t.unflatten(-1, (heads, -1))


def test_dense_self_attention_by_hand():
    c, heads = 24, 3
    attn = _randomize(MultiHeadAttention(c, heads, qk_rms_norm=True))
    x = _rand(2, 11, c, seed=1)
    qkv = x @ attn.to_qkv.weight.T + attn.to_qkv.bias
    q, k, v = (_split_heads(t, heads) for t in qkv.split(c, dim=-1))  # [Q(all heads) | K | V]
    d = c // heads
    q = q / q.norm(dim=-1, keepdim=True) * attn.q_rms_norm.gamma * math.sqrt(d)
    k = k / k.norm(dim=-1, keepdim=True) * attn.k_rms_norm.gamma * math.sqrt(d)
    h = torch.softmax(torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(d), -1)
    h = torch.einsum("bhlm,bmhd->blhd", h, v).reshape(2, 11, c)
    expected = h @ attn.to_out.weight.T + attn.to_out.bias
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)
    assert set(attn.state_dict()) == {"to_qkv.weight", "to_qkv.bias", "q_rms_norm.gamma", "k_rms_norm.gamma",
                                      "to_out.weight", "to_out.bias"}


def test_dense_cross_attention_by_hand():
    c, cc, heads = 16, 10, 2
    attn = _randomize(MultiHeadAttention(c, heads, ctx_channels=cc, type="cross"))
    x, ctx = _rand(2, 5, c, seed=1), _rand(2, 7, cc, seed=2)
    q = _split_heads(attn.to_q(x), heads)
    k, v = (_split_heads(t, heads) for t in attn.to_kv(ctx).split(c, dim=-1))
    expected = attn.to_out(naive_attention(q, k, v).reshape(2, 5, c))
    torch.testing.assert_close(attn(x, ctx), expected, atol=1e-5, rtol=1e-5)
    assert set(attn.state_dict()) == {"to_q.weight", "to_q.bias", "to_kv.weight", "to_kv.bias",
                                      "to_out.weight", "to_out.bias"}


def _copy_weights(src, dst):
    dst.load_state_dict(src.state_dict())
    return dst


def test_sparse_attention_matches_dense_per_item():
    c, cc, heads = 16, 12, 4
    x = _shell_tensor(batch=3, res=10, channels=(c,))
    x_items = [x.feats[s] for s in x.layout]
    sa = _randomize(SparseMultiHeadAttention(c, heads, qk_rms_norm=True), 1)
    da = _copy_weights(sa, MultiHeadAttention(c, heads, qk_rms_norm=True))
    out = sa(x).feats
    for s, xi in zip(x.layout, x_items):
        torch.testing.assert_close(out[s], da(xi[None])[0], atol=1e-5, rtol=1e-5)
    # cross with a dense context, and with a variable-length sparse context
    ca = _randomize(SparseMultiHeadAttention(c, heads, ctx_channels=cc, type="cross"), 2)
    dca = _copy_weights(ca, MultiHeadAttention(c, heads, ctx_channels=cc, type="cross"))
    ctx = _rand(3, 6, cc, seed=3)
    out = ca(x, ctx).feats
    for b, s in enumerate(x.layout):
        torch.testing.assert_close(out[s], dca(x.feats[s][None], ctx[b:b + 1])[0], atol=1e-5, rtol=1e-5)
    lens = [2, 9, 4]
    sctx = SparseTensor(_rand(sum(lens), cc, seed=4),
                        torch.cat([torch.tensor([[b, i, 0, 0] for i in range(n)]) for b, n in enumerate(lens)]))
    out = ca(x, sctx).feats
    for b, s in enumerate(x.layout):
        torch.testing.assert_close(out[s], dca(x.feats[s][None], sctx.feats[sctx.layout[b]][None])[0],
                                   atol=1e-5, rtol=1e-5)


def test_sparse_swin_attention_layer_uses_windows():
    c, heads = 16, 2
    x = _shell_tensor(batch=2, res=20, channels=(c,))
    layer = _randomize(SparseMultiHeadAttention(c, heads, attn_mode="swin", window_size=8, shift_window=4), 3)
    qkv = x.replace(layer.to_qkv(x.feats).unflatten(-1, (3, heads, c // heads)))
    expected = layer.to_out(sparse_windowed_self_attention(qkv, 8, 4).feats.flatten(1))
    torch.testing.assert_close(layer(x).feats, expected, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError):
        SparseMultiHeadAttention(c, heads, attn_mode="swin")  # no window size
    with pytest.raises(NotImplementedError):
        MultiHeadAttention(c, heads, use_rope=True)


# ------------------------------------------------------------------------------------------ extension points
class _FrameWindowAttention(MultiHeadAttention):
    """What a 4D subclass does: x [(B·T), L, C]; frames grouped in windows of `frames_per_window`."""

    def self_attn_segments(self, batch, length, num_frames=None, frames_per_window=None, **kwargs):
        windows = []
        for _ in range(batch // num_frames):
            for start in range(0, num_frames, frames_per_window):
                windows.append(min(frames_per_window, num_frames - start) * length)
        return windows


class _ScaleQK(MultiHeadAttention):
    def qk_transform(self, q, k, x, factor=1.0, **kwargs):
        return q * factor, k * factor


def test_dense_extension_hooks():
    c, heads, frames, length = 16, 2, 5, 6
    layer = _randomize(_FrameWindowAttention(c, heads), 4)
    plain = _copy_weights(layer, MultiHeadAttention(c, heads))
    x = _rand(2 * frames, length, c, seed=5)
    out = layer(x, num_frames=frames, frames_per_window=2)
    # windows (2, 2, 1) frames of each sample == plain attention over the concatenated frames
    for b in range(2):
        for start, n in ((0, 2), (2, 2), (4, 1)):
            rows = slice(b * frames + start, b * frames + start + n)
            expected = plain(x[rows].reshape(1, n * length, c)).reshape(n, length, c)
            torch.testing.assert_close(out[rows], expected, atol=1e-5, rtol=1e-5)
    # qk_transform runs before the RMS norm: a q/k rescale is normalised away
    scaled = _randomize(_ScaleQK(c, heads, qk_rms_norm=True), 7)
    base = _copy_weights(scaled, MultiHeadAttention(c, heads, qk_rms_norm=True))
    torch.testing.assert_close(scaled(x, factor=3.0), base(x), atol=1e-5, rtol=1e-5)
    no_norm = _copy_weights(plain, _ScaleQK(c, heads))
    assert not torch.allclose(no_norm(x, factor=3.0), plain(x), atol=1e-3)


class _FoldedFramesAttention(SparseMultiHeadAttention):
    """Sparse 4D-style grouping: segments span `num_frames` consecutive batch entries."""

    def self_attn_partition(self, x, num_frames=1, **kwargs):
        lens = x.seqlens
        return None, None, [sum(lens[i:i + num_frames]) for i in range(0, len(lens), num_frames)]


def test_sparse_extension_partition_spans_batch_entries():
    c, heads = 16, 2
    x = _shell_tensor(batch=4, res=8, channels=(c,))
    layer = _randomize(_FoldedFramesAttention(c, heads), 6)
    plain = _copy_weights(layer, MultiHeadAttention(c, heads))
    out = layer(x, num_frames=2).feats
    for first in (0, 2):
        rows = slice(x.layout[first].start, x.layout[first + 1].stop)
        torch.testing.assert_close(out[rows], plain(x.feats[rows][None])[0], atol=1e-5, rtol=1e-5)

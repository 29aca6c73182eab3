"""Submanifold sparse conv: generic N-D core, SparseConv3d, backends.

References used (all independent of the code under test):
* dense ``torch.nn.functional.conv3d`` on the dense scatter of the sparse input, read back at
  the active sites (exact in float64);
* brute-force Python loops over a dict of keys (neighbour maps, 4D convs);
* TRELLIS's own outputs in the tiny-model fixtures (res-blocks of the SLat flow and the mesh
  decoder, recomputed here from plain torch ops + the sparse ops).
"""
import itertools

import pytest
import torch
import torch.nn.functional as F

from conftest import TRELLIS_FIXTURES
from trellis_ext.sparse import SparseDownsample, SparseSiLU, SparseTensor, SparseUpsample
from trellis_ext.sparse.conv import backends
from trellis_ext.sparse.conv import (
    BACKEND_ENV,
    MISSING,
    NeighborMap,
    SparseConv3d,
    available_backends,
    build_neighbor_map,
    cached_neighbor_map,
    decode_keys,
    encode_keys,
    get_neighbor_map,
    kernel_offsets,
    pad_offsets,
    select_backend,
    spconv_available,
    submanifold_conv,
)

FIXTURES = TRELLIS_FIXTURES / "tiny"  # $SS4D_TRELLIS_FIXTURES (default ../shared/trellis_reference)
FIXTURE_ATOL = 1e-4  # suggested by the fixture README for float32 re-implementations


# ------------------------------------------------------------------------------------ helpers
def random_sparse(sizes, grid, channels, dtype=torch.float64, seed=0):
    """Batch of len(sizes) items with sizes[i] distinct random voxels in [0, grid)^3, sorted."""
    g = torch.Generator().manual_seed(seed)
    coords = []
    for b, n in enumerate(sizes):
        flat = torch.randperm(grid ** 3, generator=g)[:n].sort().values
        xyz = torch.stack([flat // (grid * grid), (flat // grid) % grid, flat % grid], 1)
        coords.append(torch.cat([torch.full((n, 1), b), xyz], 1))
    coords = torch.cat(coords).int()
    feats = torch.randn(coords.shape[0], channels, generator=g, dtype=dtype)
    return SparseTensor(feats, coords)


def dense_reference(x: SparseTensor, weight, bias, dilation, grid):
    """Dense conv3d of the scattered input, read at the active sites."""
    k = weight.shape[1:4]
    w = weight.permute(0, 4, 1, 2, 3)  # spconv [out, kx, ky, kz, in] -> torch [out, in, kx, ky, kz]
    pad = tuple((kk // 2) * d for kk, d in zip(k, dilation))
    y = F.conv3d(x.dense((grid,) * 3), w, bias, padding=pad, dilation=dilation)
    c = x.coords.long()
    return y[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]


def brute_neighbors(keys, offsets):
    index = {tuple(r): i for i, r in enumerate(keys.tolist())}
    out = torch.full((keys.shape[0], offsets.shape[0]), MISSING, dtype=torch.long)
    for i, r in enumerate(keys.tolist()):
        for k, o in enumerate(offsets.tolist()):
            out[i, k] = index.get(tuple(a + b for a, b in zip(r, o)), MISSING)
    return out


# ---------------------------------------------------------------------------- offsets / keys
def test_kernel_offsets_row_major_like_spconv():
    ref = torch.nonzero(torch.ones(3, 3, 3)) - 1  # row-major enumeration of the kernel grid
    assert torch.equal(kernel_offsets((3, 3, 3)), ref)
    assert kernel_offsets((3, 1, 1, 1)).tolist() == [[-1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]]
    assert torch.equal(kernel_offsets((3, 3), dilation=2), (torch.nonzero(torch.ones(3, 3)) - 1) * 2)
    assert torch.equal(kernel_offsets((3, 3, 3, 3)), torch.nonzero(torch.ones(3, 3, 3, 3)) - 1)
    assert pad_offsets(kernel_offsets((1, 1, 1))).tolist() == [[0, 0, 0, 0]]


def test_encode_decode_roundtrip_and_order():
    g = torch.Generator().manual_seed(1)
    keys = torch.randint(-5, 40, (200, 5), generator=g)
    codes, spec = encode_keys(keys)
    assert torch.equal(decode_keys(codes, spec), keys)
    order = torch.argsort(codes)
    lex = sorted(range(len(keys)), key=lambda i: tuple(keys[i].tolist()))
    assert [tuple(keys[i].tolist()) for i in order.tolist()] == [tuple(keys[i].tolist()) for i in lex]


# ------------------------------------------------------------------------------ neighbour maps
def test_neighbor_map_matches_brute_force_and_invariants():
    x = random_sparse([60, 45], grid=6, channels=1)
    offs = pad_offsets(kernel_offsets((3, 3, 3)))
    nbr = build_neighbor_map(x.coords, offs)
    assert nbr.dtype == torch.long and nbr.shape == (105, 27)
    assert torch.equal(nbr, brute_neighbors(x.coords.long(), offs))
    centre = 13
    assert torch.equal(nbr[:, centre], torch.arange(105))
    # symmetry: j is i's neighbour at +d  <=>  i is j's neighbour at -d (offset K-1-k)
    i, k = torch.nonzero(nbr >= 0, as_tuple=True)
    assert torch.equal(nbr[nbr[i, k], 26 - k], i)
    # never across batch items
    assert torch.equal(x.coords[nbr[i, k], 0], x.coords[i, 0])


def test_neighbor_map_rejects_duplicates_and_handles_edges():
    keys = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1]])
    with pytest.raises(ValueError, match="duplicate"):
        build_neighbor_map(keys, pad_offsets(kernel_offsets((3, 3, 3))))
    empty = build_neighbor_map(torch.zeros(0, 4, dtype=torch.long), pad_offsets(kernel_offsets((3, 3, 3))))
    assert empty.shape == (0, 27)
    single = build_neighbor_map(torch.tensor([[0, 5, 5, 5]]), pad_offsets(kernel_offsets((3, 3, 3))))
    assert (single[0, :13] == MISSING).all() and single[0, 13] == 0 and (single[0, 14:] == MISSING).all()


# --------------------------------------------------------------------------- conv numerics
@pytest.mark.parametrize(
    "k,dilation,cin,cout",
    [(3, (1, 1, 1), 3, 5), (3, (1, 1, 1), 8, 4), (3, (2, 1, 1), 4, 6), (1, (1, 1, 1), 5, 7), ((3, 1, 3), (1, 1, 1), 2, 3)],
)
def test_torch_conv_matches_dense_conv3d(k, dilation, cin, cout):
    grid = 7
    x = random_sparse([70, 33], grid=grid, channels=cin, seed=10 * cin + cout)
    conv = SparseConv3d(cin, cout, k, dilation=dilation, spconv_1x1_compat=False, backend="torch").double()
    with torch.no_grad():
        conv.conv.bias.normal_()
    feats = x.feats.clone().requires_grad_()
    y = conv(x.replace(feats))
    ref_feats = x.feats.clone().requires_grad_()
    ref = dense_reference(x.replace(ref_feats), conv.conv.weight, conv.conv.bias, dilation, grid)
    assert torch.equal(y.coords, x.coords)
    torch.testing.assert_close(y.feats, ref, rtol=1e-12, atol=1e-12)
    # gradients (w.r.t. feats, weight, bias) agree with the dense conv's too
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(y.feats, [feats, conv.conv.weight, conv.conv.bias], g)
    ref_grads = torch.autograd.grad(ref, [ref_feats, conv.conv.weight, conv.conv.bias], g)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_conv_without_bias_and_kio_layout():
    x = random_sparse([30, 20], grid=5, channels=3)
    conv = SparseConv3d(3, 2, 3, bias=False).double()
    assert conv.conv.bias is None
    y = conv(x).feats
    ref = dense_reference(x, conv.conv.weight, None, (1, 1, 1), 5)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    nbr = get_neighbor_map(x, (3, 3, 3), (1, 1, 1)).table
    w_kio = conv.conv.weight.reshape(2, 27, 3).permute(1, 2, 0)
    torch.testing.assert_close(submanifold_conv(x.feats, nbr, w_kio, weight_layout="kio"), ref, rtol=1e-12, atol=1e-12)


def test_pointwise_spconv_compat_reinterprets_weight():
    x = random_sparse([10, 6], grid=4, channels=4)
    conv = SparseConv3d(4, 3, 1).double()  # default: spconv's 1x1 fast path
    w, b = conv.conv.weight, conv.conv.bias
    ref = x.feats @ w.detach().flatten().reshape(4, 3) + b.detach()  # view(in, out) of [out,1,1,1,in]
    torch.testing.assert_close(conv(x).feats, ref)
    exact = SparseConv3d(4, 3, 1, spconv_1x1_compat=False).double()
    exact.load_state_dict(conv.state_dict())
    torch.testing.assert_close(exact(x).feats, x.feats @ w.detach().reshape(3, 4).t() + b.detach())


def test_nd_core_4d_against_brute_force():
    """(sample, t, x, y, z) keys; 3^4 and (3,1,1,1) kernels with spconv weight layouts."""
    g = torch.Generator().manual_seed(3)
    flat = torch.randperm(2 * 4 * 4 ** 3, generator=g)[:90]
    keys = torch.stack([flat // 256, (flat // 64) % 4, (flat // 16) % 4, (flat // 4) % 4, flat % 4], 1)
    cin, cout = 3, 2
    feats = torch.randn(90, cin, generator=g, dtype=torch.float64)
    for ksize in [(3, 3, 3, 3), (3, 1, 1, 1)]:
        weight = torch.randn(cout, *ksize, cin, generator=g, dtype=torch.float64)  # [out, kt, kx, ky, kz, in]
        bias = torch.randn(cout, generator=g, dtype=torch.float64)
        offs = pad_offsets(kernel_offsets(ksize))
        nbr = build_neighbor_map(keys, offs)
        assert torch.equal(nbr, brute_neighbors(keys, offs))
        out = submanifold_conv(feats, nbr, weight, bias)
        index = {tuple(r): i for i, r in enumerate(keys.tolist())}
        ref = torch.zeros(90, cout, dtype=torch.float64)
        for i, r in enumerate(keys.tolist()):
            ref[i] = bias
            for kidx in itertools.product(*[range(s) for s in ksize]):
                d = [j - s // 2 for j, s in zip(kidx, ksize)]
                j = index.get((r[0],) + tuple(a + b for a, b in zip(r[1:], d)))
                if j is not None:
                    ref[i] += weight[(slice(None),) + kidx + (slice(None),)] @ feats[j]
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_gradcheck():
    x = random_sparse([9, 7], grid=3, channels=2)
    nbr = NeighborMap(build_neighbor_map(x.coords, pad_offsets(kernel_offsets((3, 3, 3)))))
    feats = x.feats.clone().requires_grad_()
    w = torch.randn(2, 3, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, w, b: submanifold_conv(f, nbr, w, b), (feats, w, b))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_matches_fp32(dtype):
    x = random_sparse([200, 150], grid=8, channels=16, dtype=torch.float32)
    conv = SparseConv3d(16, 24, 3)
    ref = conv(x).feats
    y = conv(x.type(dtype))
    assert y.feats.dtype == dtype and conv.conv.weight.dtype == torch.float32
    tol = 1e-2 if dtype == torch.float16 else 5e-2
    torch.testing.assert_close(y.feats.float(), ref, rtol=tol, atol=tol * ref.abs().max().item())
    # backward in half precision runs and roughly agrees with fp32
    xh = x.type(dtype).replace(x.feats.to(dtype).requires_grad_())
    conv(xh).feats.float().square().sum().backward()
    w_grad_half = conv.conv.weight.grad.clone()
    conv.zero_grad()
    conv(x).feats.square().sum().backward()
    torch.testing.assert_close(w_grad_half, conv.conv.weight.grad, rtol=5 * tol, atol=5 * tol * conv.conv.weight.grad.abs().max().item())
    assert xh.feats.grad.dtype == dtype
    conv.half()
    assert conv(x.half()).feats.dtype == torch.float16


# ----------------------------------------------------------------------- module / cache / API
def test_state_dict_layout_and_errors():
    conv = SparseConv3d(128, 64, 3)
    sd = conv.state_dict()
    assert list(sd) == ["conv.weight", "conv.bias"]
    assert sd["conv.weight"].shape == (64, 3, 3, 3, 128) and sd["conv.bias"].shape == (64,)
    with pytest.raises(NotImplementedError, match="stride"):
        SparseConv3d(4, 4, 3, stride=2)
    with pytest.raises(NotImplementedError, match="padding"):
        SparseConv3d(4, 4, 3, padding=1)
    with pytest.raises(ValueError, match="odd"):
        SparseConv3d(4, 4, 2)
    with pytest.raises(ValueError):
        conv(random_sparse([5], grid=3, channels=7, dtype=torch.float32))


def test_neighbor_map_cached_and_reused(monkeypatch):
    calls = []
    real_build = backends.build_neighbor_map
    monkeypatch.setattr(backends, "build_neighbor_map", lambda *a: calls.append(1) or real_build(*a))
    x = random_sparse([40, 30], grid=5, channels=4, dtype=torch.float32)
    c1, c2 = SparseConv3d(4, 4, 3), SparseConv3d(4, 4, 3)
    h = c2(SparseSiLU()(c1(x)))
    assert len(calls) == 1  # one build for both convs (h shares x's cache through replace())
    nm = get_neighbor_map(h, (3, 3, 3), (1, 1, 1))
    assert get_neighbor_map(x, (3, 3, 3), (1, 1, 1)) is nm and len(calls) == 1
    get_neighbor_map(x, (3, 3, 3), (2, 2, 2))
    assert len(calls) == 2  # another dilation is another map
    # a tensor with other coords that (wrongly) shares the cache gets a rebuilt map
    moved = SparseTensor(x.feats, x.coords + torch.tensor([0, 1, 0, 0], dtype=torch.int32),
                         spatial_cache=x._spatial_cache)
    nm2 = get_neighbor_map(moved, (3, 3, 3), (1, 1, 1))
    assert nm2 is not nm and nm2.matches(moved.coords) and len(calls) == 3
    # down -> up restores the fine coords object, so the fine map is reused
    up = SparseUpsample(2)(SparseDownsample(2)(x))
    assert get_neighbor_map(up, (3, 3, 3), (1, 1, 1)) is get_neighbor_map(x, (3, 3, 3), (1, 1, 1))


def test_cached_neighbor_map_with_derived_keys():
    """A temporal (3,1,1,1) map over (sample, t, x, y, z) keys from folded batch = b*T + t."""
    frames = 3
    x = random_sparse([20, 20, 20, 20, 20, 20], grid=3, channels=1, dtype=torch.float32)

    def unfold(coords):
        b = coords[:, :1].long()
        return torch.cat([b // frames, b % frames, coords[:, 1:].long()], 1)

    offs = pad_offsets(kernel_offsets((3, 1, 1, 1)))
    nm = cached_neighbor_map(x, "temporal_3", offs, unfold)
    assert cached_neighbor_map(x, "temporal_3", offs, unfold) is nm
    assert torch.equal(nm.table, brute_neighbors(unfold(x.coords), offs))
    t = unfold(x.coords)[:, 1]
    assert (nm.table[t == 0, 0] == MISSING).all() and (nm.table[t == frames - 1, 2] == MISSING).all()


def test_backend_selection(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert select_backend(cpu) == "torch"
    monkeypatch.setenv(BACKEND_ENV, "torch")
    assert select_backend(cpu) == "torch"
    monkeypatch.setenv(BACKEND_ENV, "bogus")
    with pytest.raises(ValueError):
        select_backend(cpu)
    monkeypatch.setenv(BACKEND_ENV, "spconv")
    backends._warn_spconv_on_cpu.cache_clear()  # the warning is issued once per process
    with pytest.warns(RuntimeWarning, match="only used on CUDA"):
        assert select_backend(cpu) == "torch"  # never spconv on CPU
    assert available_backends(cpu) == ("torch",)
    monkeypatch.setenv(BACKEND_ENV, "auto")
    if not spconv_available():
        assert select_backend(torch.device("cuda")) == "torch"
        with pytest.raises(ImportError):
            select_backend(torch.device("cuda"), "spconv")


@pytest.mark.skipif(
    not (torch.cuda.is_available() and spconv_available()),
    reason=f"the spconv backend runs only on CUDA with spconv installed (CUDA: {torch.cuda.is_available()}, "
    f"spconv.pytorch importable: {spconv_available()})",
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_spconv_backend_matches_torch_backend(dtype):
    x = random_sparse([500, 300], grid=12, channels=32, dtype=torch.float32).to("cuda").type(dtype)
    conv = SparseConv3d(32, 48, 3).cuda()
    results = {}
    for backend in ("torch", "spconv"):
        conv.backend = backend
        conv.zero_grad()
        y = conv(x).feats
        y.float().square().sum().backward()
        results[backend] = (y.float(), conv.conv.weight.grad.clone())
    (y_t, g_t), (y_s, g_s) = results["torch"], results["spconv"]
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(y_s, y_t, rtol=tol, atol=tol * y_t.abs().max().item())
    torch.testing.assert_close(g_s, g_t, rtol=tol, atol=tol * g_t.abs().max().item())


# ---------------------------------------------------------------- TRELLIS tiny-model fixtures
def _load(model, name):
    st = pytest.importorskip("safetensors.torch")
    path = FIXTURES / model / f"{name}.safetensors"
    if not path.exists():
        pytest.skip(f"TRELLIS fixture {path} not available")
    return st.load_file(str(path))


def _conv(W, prefix, x, k=3):
    w = W[f"{prefix}.conv.weight"]
    conv = SparseConv3d(w.shape[-1], w.shape[0], k)
    conv.load_state_dict({"conv.weight": w, "conv.bias": W[f"{prefix}.conv.bias"]})
    return conv(x)


def _slat_res_block(W, prefix, x, t_emb, updown=None, mean_mode="trellis"):
    """SLat-flow res-block from its documented structure (trellis.md section 2.6)."""
    eps = 1e-6
    if updown == "down":
        x = SparseDownsample(2, mean_mode=mean_mode)(x)
    elif updown == "up":
        x = SparseUpsample(2)(x)
    emb = F.linear(F.silu(t_emb), W[f"{prefix}.emb_layers.1.weight"], W[f"{prefix}.emb_layers.1.bias"])
    scale, shift = emb.chunk(2, dim=1)
    c = x.feats.shape[1]
    h = x.replace(F.silu(F.layer_norm(x.feats, (c,), W[f"{prefix}.norm1.weight"], W[f"{prefix}.norm1.bias"], eps)))
    h = _conv(W, f"{prefix}.conv1", h)
    h = h.replace(F.layer_norm(h.feats, h.feats.shape[-1:], eps=eps)) * (1 + scale) + shift
    h = _conv(W, f"{prefix}.conv2", h.replace(F.silu(h.feats)))
    skip_w = W.get(f"{prefix}.skip_connection.weight")
    skip = x.feats if skip_w is None else F.linear(x.feats, skip_w, W[f"{prefix}.skip_connection.bias"])
    return h + skip


def test_slat_flow_io_blocks_match_trellis_fixture():
    """Convs (+ downsample mean semantics + upsample) inside the SLat flow's res-blocks."""
    W, I = _load("slat_flow", "model"), _load("slat_flow", "intermediates")
    t_emb = I["t_embedder"]
    x = SparseTensor(I["input_layer.feats"], I["input_layer.coords"])
    with torch.no_grad():
        h0 = _slat_res_block(W, "input_blocks.0", x, t_emb)
        torch.testing.assert_close(h0.feats, I["input_blocks.0.feats"], rtol=FIXTURE_ATOL, atol=FIXTURE_ATOL)
        h1 = _slat_res_block(W, "input_blocks.1", h0, t_emb, "down")
        assert torch.equal(h1.coords, I["input_blocks.1.coords"])
        torch.testing.assert_close(h1.feats, I["input_blocks.1.feats"], rtol=FIXTURE_ATOL, atol=FIXTURE_ATOL)
        # the true mean does NOT reproduce TRELLIS: its pooling divides by (n + 1)
        h1_exact = _slat_res_block(W, "input_blocks.1", h0, t_emb, "down", mean_mode="exact")
        assert (h1_exact.feats - I["input_blocks.1.feats"]).abs().max() > 1e-2
        coarse = h1.replace(torch.cat([I["blocks.1.feats"], I["input_blocks.1.feats"]], 1))
        o0 = _slat_res_block(W, "out_blocks.0", coarse, t_emb, "up")
        assert torch.equal(o0.coords, I["out_blocks.0.coords"])
        torch.testing.assert_close(o0.feats, I["out_blocks.0.feats"], rtol=FIXTURE_ATOL, atol=FIXTURE_ATOL)
        o1 = _slat_res_block(W, "out_blocks.1", o0.replace(torch.cat([I["out_blocks.0.feats"], I["input_blocks.0.feats"]], 1)), t_emb)
        torch.testing.assert_close(o1.feats, I["out_blocks.1.feats"], rtol=FIXTURE_ATOL, atol=FIXTURE_ATOL)


def test_mesh_decoder_subdivide_blocks_match_trellis_fixture():
    """Group norm per item, subdivide order, 3^3 convs and spconv's 1x1 path."""
    from trellis_ext.sparse import SparseGroupNorm32, SparseSiLU, SparseSubdivide

    W, I = _load("slat_dec_mesh", "model"), _load("slat_dec_mesh", "intermediates")
    groups = 32

    def norm(prefix, x):
        gn = SparseGroupNorm32(groups, x.feats.shape[1])
        gn.load_state_dict({"weight": W[f"{prefix}.weight"], "bias": W[f"{prefix}.bias"]})
        return gn(x)

    def block(prefix, x):
        sub = SparseSubdivide()
        h = sub(SparseSiLU()(norm(f"{prefix}.act_layers.0", x)))
        h = _conv(W, f"{prefix}.out_layers.0", h)
        h = _conv(W, f"{prefix}.out_layers.3", SparseSiLU()(norm(f"{prefix}.out_layers.1", h)))
        return h + _conv(W, f"{prefix}.skip_connection", sub(x), k=1)

    with torch.no_grad():
        for i, src in enumerate(["blocks.1", "upsample.0"]):
            out = block(f"upsample.{i}", SparseTensor(I[f"{src}.feats"], I[f"{src}.coords"]))
            assert torch.equal(out.coords, I[f"upsample.{i}.coords"])
            torch.testing.assert_close(out.feats, I[f"upsample.{i}.feats"], rtol=FIXTURE_ATOL, atol=FIXTURE_ATOL)

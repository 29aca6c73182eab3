"""Sparse linear / activation / norm layers and spatial up/down sampling.

References: torch's dense layers on the same numbers, hand computations, and the coords that
TRELLIS itself produced in the tiny-model fixtures.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import TRELLIS_FIXTURES
from trellis_ext.sparse import (
    SparseActivation,
    SparseDownsample,
    SparseGELU,
    SparseGroupNorm,
    SparseGroupNorm32,
    SparseLayerNorm,
    SparseLayerNorm32,
    SparseLinear,
    SparseReLU,
    SparseSiLU,
    SparseSubdivide,
    SparseTensor,
    SparseUpsample,
)

FIXTURES = TRELLIS_FIXTURES / "tiny"  # $SS4D_TRELLIS_FIXTURES (default ../shared/trellis_reference)


def random_sparse(sizes, grid, channels, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = []
    for b, n in enumerate(sizes):
        flat = torch.randperm(grid ** 3, generator=g)[:n].sort().values
        xyz = torch.stack([flat // (grid * grid), (flat // grid) % grid, flat % grid], 1)
        coords.append(torch.cat([torch.full((n, 1), b), xyz], 1))
    coords = torch.cat(coords).int()
    return SparseTensor(torch.randn(coords.shape[0], channels, generator=g, dtype=dtype), coords)


# ------------------------------------------------------------------------------ linear / act
def test_sparse_linear_keys_and_numerics():
    x = random_sparse([20, 13], grid=5, channels=6)
    lin = SparseLinear(6, 4).double()
    assert {k: tuple(v.shape) for k, v in lin.state_dict().items()} == {"weight": (4, 6), "bias": (4,)}
    dense = nn.Linear(6, 4).double()
    dense.load_state_dict(lin.state_dict())
    y = lin(x)
    torch.testing.assert_close(y.feats, dense(x.feats))
    assert y.coords is x.coords and y._spatial_cache is x._spatial_cache and y.shape == (2, 4)
    torch.testing.assert_close(lin(x.feats), dense(x.feats))


def test_activations():
    x = random_sparse([15, 9], grid=4, channels=5)
    f = x.feats
    torch.testing.assert_close(SparseSiLU()(x).feats, f * torch.sigmoid(f))
    torch.testing.assert_close(SparseReLU()(x).feats, f.clamp(min=0))
    torch.testing.assert_close(SparseGELU()(x).feats, 0.5 * f * (1 + torch.erf(f / 2 ** 0.5)))
    tanh_ref = 0.5 * f * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (f + 0.044715 * f ** 3)))
    torch.testing.assert_close(SparseGELU(approximate="tanh")(x).feats, tanh_ref)
    torch.testing.assert_close(SparseActivation(torch.tanh)(x).feats, torch.tanh(f))
    torch.testing.assert_close(SparseActivation(nn.Softplus())(x).feats, F.softplus(f))
    assert SparseSiLU()(x).coords is x.coords


# ------------------------------------------------------------------------------------ norms
def test_layer_norm_keys_and_numerics():
    x = random_sparse([12, 8], grid=4, channels=16)
    ln = SparseLayerNorm(16, eps=1e-6).double()
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    assert set(ln.state_dict()) == {"weight", "bias"}
    f = x.feats
    ref = (f - f.mean(1, keepdim=True)) / torch.sqrt(f.var(1, unbiased=False, keepdim=True) + 1e-6)
    torch.testing.assert_close(ln(x).feats, ref * ln.weight + ln.bias)
    assert set(SparseLayerNorm(16, elementwise_affine=False).state_dict()) == set()


def test_layer_norm32_fp16():
    x = random_sparse([30, 20], grid=5, channels=32, dtype=torch.float32)
    ln = SparseLayerNorm32(32)
    y = ln(x.half())
    assert y.feats.dtype == torch.float16
    torch.testing.assert_close(y.feats.float(), ln(x).feats, rtol=1e-2, atol=1e-2)
    ln.half()  # even with fp16 affine parameters the statistics are computed in fp32
    assert ln(x.half()).feats.dtype == torch.float16


def _group_norm_ref(feats, groups, weight, bias, eps):
    """Hand-written group norm over all rows of one item: feats [N_b, C]."""
    n, c = feats.shape
    g = feats.reshape(n, groups, c // groups)
    mean = g.mean(dim=(0, 2), keepdim=True)
    var = ((g - mean) ** 2).mean(dim=(0, 2), keepdim=True)
    return ((g - mean) / torch.sqrt(var + eps)).reshape(n, c) * weight + bias


def test_group_norm_per_item():
    x = random_sparse([25, 40], grid=5, channels=8)
    x = x.replace(x.feats + torch.cat([torch.zeros(25, 8), 5 * torch.ones(40, 8)]).double())  # items differ
    gn = SparseGroupNorm(4, 8).double()
    with torch.no_grad():
        gn.weight.normal_()
        gn.bias.normal_()
    assert set(gn.state_dict()) == set(nn.GroupNorm(4, 8).state_dict())
    y = gn(x).feats
    for sl in x.layout:
        torch.testing.assert_close(y[sl], _group_norm_ref(x.feats[sl], 4, gn.weight, gn.bias, gn.eps))
    # statistics over the whole batch would be different
    whole = _group_norm_ref(x.feats, 4, gn.weight, gn.bias, gn.eps)
    assert (whole - y).abs().max() > 1e-2


def test_group_norm32_fp16_and_empty_item():
    x = random_sparse([30, 0, 20], grid=5, channels=8, dtype=torch.float32)
    x = SparseTensor(x.feats, x.coords, shape=(3, 8))
    assert x.seqlens == [30, 0, 20]
    gn = SparseGroupNorm32(2, 8)
    y = gn(x.half())
    assert y.feats.dtype == torch.float16 and y.feats.shape == (50, 8)
    torch.testing.assert_close(y.feats.float(), gn(x).feats, rtol=1e-2, atol=1e-2)


# ------------------------------------------------------------------------- down / up sampling
def _toy():
    """Item 0: three fine voxels in coarse cell (0,0,0) and one in (1,0,0); item 1: one voxel."""
    coords = torch.tensor([[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 1, 0], [0, 3, 0, 1], [1, 2, 2, 2]], dtype=torch.int32)
    feats = torch.tensor([[1.0, 10.0], [2.0, 20.0], [6.0, 60.0], [4.0, 40.0], [8.0, 80.0]], dtype=torch.float64)
    return SparseTensor(feats, coords)


def test_downsample_mean_semantics_by_hand():
    x = _toy()
    exp_coords = [[0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 1, 1]]
    trellis = SparseDownsample(2)(x)
    assert trellis.coords.dtype == torch.int32 and trellis.coords.tolist() == exp_coords
    # scatter_reduce(mean, include_self=True) from zeros: sum / (n + 1)
    torch.testing.assert_close(trellis.feats, torch.tensor([[9 / 4, 90 / 4], [4 / 2, 40 / 2], [8 / 2, 80 / 2]], dtype=torch.float64))
    exact = SparseDownsample(2, mean_mode="exact")(x)
    torch.testing.assert_close(exact.feats, torch.tensor([[3.0, 30.0], [4.0, 40.0], [8.0, 80.0]], dtype=torch.float64))
    # ... which is what torch documents for scatter_reduce
    idx = torch.tensor([0, 0, 0, 1, 2]).unsqueeze(1).expand(-1, 2)
    ref = torch.scatter_reduce(torch.zeros(3, 2, dtype=torch.float64), 0, idx, x.feats, reduce="mean")
    torch.testing.assert_close(trellis.feats, ref)
    assert trellis._scale == (2, 2, 2) and trellis.shape == (2, 2) and trellis.seqlens == [2, 1]
    with pytest.raises(ValueError):
        SparseDownsample(2, mean_mode="average")


def test_downsample_coords_sorted_and_unique():
    x = random_sparse([300, 1, 200], grid=9, channels=3, seed=4)
    for factor in [2, (2, 1, 3)]:
        y = SparseDownsample(factor)(x)
        f = (factor,) * 3 if isinstance(factor, int) else factor
        ref = sorted({(r[0], r[1] // f[0], r[2] // f[1], r[3] // f[2]) for r in x.coords.tolist()})
        assert [tuple(r) for r in y.coords.tolist()] == ref
        assert y._scale == f and y.batch_size == 3


def test_down_up_roundtrip_restores_fine_tensor():
    x = random_sparse([120, 77], grid=8, channels=4, seed=5)
    x = SparseTensor(x.feats, x.coords, scale=(2, 2, 2))
    down = SparseDownsample(2, mean_mode="exact")
    y = down(x)
    z = SparseUpsample(2)(y.replace(y.feats * 3))  # feats may be replaced between the two
    assert torch.equal(z.coords, x.coords) and z.layout == x.layout and z._scale == (2, 2, 2)
    assert z.shape == x.shape
    # every fine voxel gets its coarse parent's feature
    parent = {tuple(r): i for i, r in enumerate(y.coords.tolist())}
    for i, r in enumerate(x.coords.tolist()):
        j = parent[(r[0], r[1] // 2, r[2] // 2, r[3] // 2)]
        torch.testing.assert_close(z.feats[i], 3 * y.feats[j])
    # gradients flow back through both
    feats = x.feats.clone().requires_grad_()
    SparseUpsample(2)(down(x.replace(feats))).feats.sum().backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()


def test_upsample_needs_paired_downsample():
    x = random_sparse([20], grid=4, channels=2)
    with pytest.raises(RuntimeError, match="paired SparseDownsample"):
        SparseUpsample(2)(x)
    y = SparseDownsample(2)(x)
    with pytest.raises(RuntimeError, match="paired SparseDownsample"):
        SparseUpsample(4)(y)


def test_downsample_half_precision():
    x = random_sparse([200, 100], grid=8, channels=8, dtype=torch.float32)
    y = SparseDownsample(2)(x.half())
    assert y.feats.dtype == torch.float16
    torch.testing.assert_close(y.feats.float(), SparseDownsample(2)(x).feats, rtol=1e-3, atol=1e-3)


# -------------------------------------------------------------------------------- subdivide
def test_subdivide_order_and_feats():
    x = random_sparse([3, 2], grid=4, channels=2, seed=6)
    x = SparseTensor(x.feats, x.coords, scale=(4, 4, 4))
    y = SparseSubdivide()(x)
    children = [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]  # nonzero(ones(2,2,2)) order
    exp = [[r[0], 2 * r[1] + a, 2 * r[2] + b, 2 * r[3] + c] for r in x.coords.tolist() for a, b, c in children]
    assert y.coords.tolist() == exp and y.coords.dtype == torch.int32
    torch.testing.assert_close(y.feats, x.feats.repeat_interleave(8, dim=0))
    assert y.layout == [slice(0, 24), slice(24, 40)] and y.shape == x.shape and y._scale == (2, 2, 2)
    assert y._spatial_cache is not x._spatial_cache


def test_subdivide_matches_trellis_mesh_decoder_coords():
    st = pytest.importorskip("safetensors.torch")
    inp, out = FIXTURES / "slat_dec_mesh" / "inputs.safetensors", FIXTURES / "slat_dec_mesh" / "outputs.safetensors"
    if not (inp.exists() and out.exists()):
        pytest.skip("TRELLIS mesh-decoder fixture not available")
    x_in, raw = st.load_file(str(inp)), st.load_file(str(out))
    x = SparseTensor(x_in["x.feats"], x_in["x.coords"])
    sub = SparseSubdivide()
    assert torch.equal(sub(sub(x)).coords, raw["raw.coords"])

"""Sparse half of the 4D stages: temporal convs, pair merge, 4D windows, 4D SLat VAE / flow, inflation.

The official-numerics checks (tiny fixtures of SS4D's code for the 4D GS decoder, 4D encoder, SLat
flow 3D_1D / 3D_4D incl. the Elastic alias) run in ``tests/test_ss4d_fixtures.py -k slat``. Here:

* temporal convs vs brute-force loops over a dict of (b, t, x, y, z) keys;
* the pair merge / copy-back vs hand-computed values in both mean modes;
* the 4D window partition vs SS4D's linear window id (and no window spans two samples);
* cross-frame attention vs a dense per-sample reference with RoPE-t before the q/k RMS norm;
* equivalences with trellis_ext's 3D models (4D GS decoder / encoder at T = 1; inflated SLat flow on
  two identical frames), gradients to every new parameter, clear errors.
"""
import itertools
import math

import pytest
import torch

import ss4d.models  # noqa: F401  (registers the 4D classes)
from ss4d.frames import FrameLayoutError
from ss4d.models.slat_flow_4d import TEMPORAL_KEY_PREFIXES, SLatFlow4DModel, inflate_slat_flow
from ss4d.models.slat_vae_4d import (SLatEncoder4D, SLatGaussianDecoder4D, inflate_slat_decoder,
                                     inflate_slat_encoder)
from ss4d.modules.rope import apply_rotary
from ss4d.modules.sparse_temporal_attention import SparseTemporalMultiHeadAttention, window_partition_4d
from ss4d.sparse import (SparseConv1d, SparseConv4d, SparseDownsampleTemporal, SparseUpsampleTemporal,
                         subm_conv_temporal)
from trellis_ext.models import get_model_class
from trellis_ext.models.structured_latent_flow import SLatFlowModel
from trellis_ext.models.structured_latent_vae import SLatEncoder, SLatGaussianDecoder
from trellis_ext.sparse import SparseTensor
from trellis_ext.sparse.conv import spconv_available

ATOL = 1e-5
GAUSSIAN_ATTRS = ("_xyz", "_features_dc", "_scaling", "_rotation", "_opacity")
REP_CONFIG = {
    "lr": {"_xyz": 1.0, "_features_dc": 1.0, "_opacity": 1.0, "_scaling": 1.0, "_rotation": 0.1},
    "perturb_offset": True, "voxel_size": 1.5, "num_gaussians": 4, "2d_filter_kernel_size": 0.1,
    "3d_filter_kernel_size": 9e-4, "scaling_bias": 4e-3, "opacity_bias": 0.1, "scaling_activation": "softplus",
}


# ------------------------------------------------------------------------------------ helpers
def random_folded(num_samples, num_frames, grid, channels, per_frame=(5, 30), dtype=torch.float32, seed=0,
                  frame_coords=None):
    """Folded sparse tensor: entry b·T + t holds random distinct voxels in [0, grid)³, sorted.

    ``frame_coords`` (list of [n, 3] per entry) overrides the random voxel sets.
    """
    g = torch.Generator().manual_seed(seed)
    rows = []
    for f in range(num_samples * num_frames):
        if frame_coords is not None:
            xyz = frame_coords[f]
        else:
            n = int(torch.randint(per_frame[0], per_frame[1] + 1, (1,), generator=g))
            flat = torch.randperm(grid ** 3, generator=g)[:n].sort().values
            xyz = torch.stack([flat // (grid * grid), (flat // grid) % grid, flat % grid], 1)
        rows.append(torch.cat([torch.full((xyz.shape[0], 1), f), xyz.long()], 1))
    coords = torch.cat(rows).int()
    feats = torch.randn(coords.shape[0], channels, generator=g, dtype=dtype)
    return SparseTensor(feats, coords, shape=(num_samples * num_frames, channels))


def randomize_(model, seed=0):
    """Redraw every parameter (the fixtures' recipe): weights randn/√fan_in, biases 0.1·randn,
    norm weights and RMS gammas 1 + 0.1·randn. Nothing stays zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("gamma") or (p.dim() == 1 and "norm" in name and name.endswith("weight")):
                p.copy_(1 + 0.1 * noise)
            elif p.dim() >= 2:
                p.copy_(noise / math.sqrt(math.prod(p.shape[1:])))
            else:
                p.copy_(0.1 * noise)
    return model


def brute_force_conv(x: SparseTensor, weight, bias, num_frames):
    """out[p] = bias + Σ_j W[:, j, :]·in[p + d_j] over active (b, t, x, y, z) sites of the same sample."""
    kernel = weight.shape[1:-1]
    w = weight.reshape(weight.shape[0], -1, weight.shape[-1])
    site = {}
    for i, (f, cx, cy, cz) in enumerate(x.coords.tolist()):
        site[(f // num_frames, f % num_frames, cx, cy, cz)] = i
    taps = list(itertools.product(*[range(-(k // 2), k // 2 + 1) for k in kernel]))  # row-major
    out = bias.expand(x.feats.shape[0], -1).clone()
    for (b, t, cx, cy, cz), i in site.items():
        for j, (dt, dx, dy, dz) in enumerate(taps):
            tt = t + dt
            if not 0 <= tt < num_frames:
                continue
            n = site.get((b, tt, cx + dx, cy + dy, cz + dz))
            if n is not None:
                out[i] += w[:, j, :] @ x.feats[n]
    return out


# ------------------------------------------------------------------------------ temporal convs
@pytest.mark.parametrize("conv_cls,kernel_shape", [(SparseConv1d, (3, 1, 1, 1)), (SparseConv4d, (3, 3, 3, 3))])
def test_temporal_conv_matches_brute_force(conv_cls, kernel_shape):
    num_frames = 3
    # dense-ish voxels on a small grid so that every tap has active neighbours, 2 samples
    x = random_folded(2, num_frames, grid=4, channels=5, per_frame=(20, 40), dtype=torch.float64)
    conv = conv_cls(5, 7, 3).double()
    with torch.no_grad():
        conv.conv.bias.normal_()
    assert tuple(conv.conv.weight.shape) == (7,) + kernel_shape + (5,)
    got = conv(x, num_frames)
    want = brute_force_conv(x, conv.conv.weight.detach(), conv.conv.bias.detach(), num_frames)
    assert torch.equal(got.coords, x.coords)
    torch.testing.assert_close(got.feats, want, atol=1e-10, rtol=1e-10)


def test_temporal_conv_1d_tap_order_and_sample_isolation():
    """Tap 0 reads frame t-1, tap 2 frame t+1; the last frame of sample 0 never reads sample 1."""
    xyz = torch.tensor([[1, 2, 3]])
    x = random_folded(2, 2, grid=4, channels=1, frame_coords=[xyz] * 4, dtype=torch.float64)
    x = x.replace(torch.tensor([[1.0], [10.0], [100.0], [1000.0]], dtype=torch.float64))
    weight = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).reshape(1, 3, 1, 1, 1, 1)
    out = subm_conv_temporal(x, weight, None, (3, 1, 1, 1), num_frames=2, backend="torch")
    # entry (b, t): 1·in(t-1) + 2·in(t) + 3·in(t+1), only inside sample b
    assert out.squeeze(1).tolist() == [2 * 1 + 3 * 10, 1 * 1 + 2 * 10, 2 * 100 + 3 * 1000, 1 * 100 + 2 * 1000]


@pytest.mark.skipif(not (torch.cuda.is_available() and spconv_available()), reason="spconv path needs CUDA + spconv")
@pytest.mark.parametrize("conv_cls", [SparseConv1d, SparseConv4d])
def test_temporal_conv_spconv_matches_torch(conv_cls):
    x = random_folded(2, 4, grid=6, channels=16, per_frame=(40, 80)).to("cuda")
    conv = conv_cls(16, 32, 3).cuda()
    with torch.no_grad():
        conv.conv.bias.normal_()
    ref = subm_conv_temporal(x, conv.conv.weight, conv.conv.bias, conv.kernel_size, 4, backend="torch")
    got = subm_conv_temporal(x, conv.conv.weight, conv.conv.bias, conv.kernel_size, 4, backend="spconv")
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------- pair merge
def _hand_case():
    """B = 1, T = 4: frame 0 {p: a, q: b}, frame 1 {p: c}, frame 2 {}, frame 3 {r: d}."""
    p, q, r = [0, 0, 0], [1, 0, 0], [2, 2, 2]
    coords = torch.tensor([[0] + p, [0] + q, [1] + p, [3] + r], dtype=torch.int32)
    feats = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 8.0], [7.0, -2.0]])
    return SparseTensor(feats, coords, shape=(4, 2))


@pytest.mark.parametrize("mode,denominators", [("trellis", (3, 2, 2)), ("exact", (2, 1, 1))])
def test_pair_merge_values_and_copy_back(mode, denominators):
    x = _hand_case()
    down = SparseDownsampleTemporal(2, mean_mode=mode)(x, num_frames=4)
    assert down.batch_size == 2
    assert down.coords.tolist() == [[0, 0, 0, 0], [0, 1, 0, 0], [1, 2, 2, 2]]  # sorted (b·T/2 + k, x, y, z)
    a, b, c, d = x.feats
    want = torch.stack([(a + c) / denominators[0], b / denominators[1], d / denominators[2]])
    torch.testing.assert_close(down.feats, want, atol=0, rtol=0)
    assert down.seqlens == [2, 1]

    up = SparseUpsampleTemporal(2)(down.replace(down.feats * 10))
    assert torch.equal(up.coords, x.coords) and up.layout == x.layout and up.batch_size == 4
    assert up._spatial_cache is x._spatial_cache  # back on the original voxel set's cache
    torch.testing.assert_close(up.feats, 10 * torch.stack([want[0], want[1], want[0], want[2]]), atol=0, rtol=0)


def test_pair_merge_two_samples_do_not_mix():
    x = random_folded(2, 2, grid=3, channels=3, per_frame=(10, 20))
    down = SparseDownsampleTemporal(2, mean_mode="exact")(x, num_frames=2)
    for b in range(2):
        in_b = x.coords[(x.coords[:, 0] // 2) == b, 1:]
        out_b = down.coords[down.coords[:, 0] == b, 1:]
        assert {tuple(v) for v in in_b.tolist()} == {tuple(v) for v in out_b.tolist()}  # union of the pair


def test_pair_merge_errors():
    x = random_folded(1, 3, grid=3, channels=2)
    with pytest.raises(FrameLayoutError, match="even"):
        SparseDownsampleTemporal(2)(x, num_frames=3)
    with pytest.raises(RuntimeError, match="paired SparseDownsampleTemporal"):
        SparseUpsampleTemporal(2)(x)
    with pytest.raises(ValueError, match="mean_mode"):
        SparseDownsampleTemporal(2, mean_mode="average")


# ---------------------------------------------------------------------------- 4D windows
@pytest.mark.parametrize("shift", [0, 2])
def test_4d_windows_follow_ss4d_partition_and_never_mix_samples(shift):
    num_samples, num_frames, w = 3, 5, 4  # T mod w != 0: sample > 0 is not window-aligned
    x = random_folded(num_samples, num_frames, grid=9, channels=1, per_frame=(10, 40))
    fwd, bwd, seqlens = window_partition_4d(x, num_frames, w, shift)
    assert torch.equal(fwd[bwd], torch.arange(x.coords.shape[0]))
    c = x.coords.long()
    sample = c[:, 0] // num_frames
    # SS4D's id: time key ⌊(f + s)/w⌋ + sample, xyz keys ⌊(c + s)/w⌋
    official = torch.cat([((c[:, :1] + shift) // w) + sample[:, None], (c[:, 1:] + shift) // w], 1)
    groups, start = [], 0
    for n in seqlens:
        rows = fwd[start:start + n]
        start += n
        assert sample[rows].unique().numel() == 1, "a window spans two samples"
        assert official[rows].unique(dim=0).shape[0] == 1, "rows of different SS4D windows merged"
        groups.append(tuple(official[rows[0]].tolist()))
    assert len(set(groups)) == len(groups), "one SS4D window split in two"
    assert x.get_spatial_cache() and any(k.startswith("window_partition_4d") for k in x.get_spatial_cache())


def test_4d_swin_attention_isolates_samples():
    attn = SparseTemporalMultiHeadAttention(16, 2, attn_mode="windowed", window_size=4, shift_window=2)
    x = random_folded(2, 5, grid=8, channels=16, per_frame=(10, 30))
    out = attn(x, num_frames=5).feats
    changed = x.feats.clone()
    n0 = sum(x.seqlens[:5])
    changed[n0:] += 1.0  # perturb sample 1 only
    out2 = attn(x.replace(changed), num_frames=5).feats
    assert torch.equal(out[:n0], out2[:n0])
    assert not torch.allclose(out[n0:], out2[n0:])


def test_full_temporal_attention_matches_dense_reference():
    """Each sample's voxels of all frames attend jointly; RoPE-t by frame index before the q/k RMS norm."""
    channels, heads, num_frames = 16, 2, 3
    attn = randomize_(SparseTemporalMultiHeadAttention(channels, heads, qk_rms_norm=True), seed=1)
    x = random_folded(2, num_frames, grid=5, channels=channels)
    got = attn(x, num_frames=num_frames).feats
    d = channels // heads
    want = torch.empty_like(got)
    with torch.no_grad():
        q, k, v = attn.to_qkv(x.feats).view(-1, 3, heads, d).unbind(1)
        t = x.coords[:, 0].long() % num_frames
        q, k = apply_rotary(q, t), apply_rotary(k, t)
        q, k = attn.q_rms_norm(q), attn.k_rms_norm(k)
        for b in range(2):
            rows = (x.coords[:, 0].long() // num_frames) == b
            scores = torch.einsum("nhd,mhd->hnm", q[rows], k[rows]) / math.sqrt(d)
            h = torch.einsum("hnm,mhd->nhd", scores.softmax(-1), v[rows])
            want[rows] = attn.to_out(h.reshape(-1, channels))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="num_frames"):
        attn(x)


# ---------------------------------------------------------------------------- 4D SLat VAE
def _decoder_3d():
    return randomize_(SLatGaussianDecoder(resolution=16, model_channels=32, latent_channels=8, num_blocks=2,
                                          num_heads=2, attn_mode="swin", window_size=4,
                                          representation_config=REP_CONFIG), seed=2).eval()


def test_gs_decoder_4d_with_one_frame_equals_trellis_decoder():
    dec3d = _decoder_3d()
    dec4d = inflate_slat_decoder(dec3d).eval()
    assert isinstance(dec4d, SLatGaussianDecoder4D) and dec4d.pe_mode == "rope_t" and dec4d.expand_self_attn
    x = random_folded(3, 1, grid=16, channels=8, per_frame=(40, 80), seed=3)
    with torch.no_grad():
        want, got = dec3d(x), dec4d(x, num_frames=1)
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
        for a in GAUSSIAN_ATTRS:
            torch.testing.assert_close(getattr(g, a), getattr(w, a), atol=ATOL, rtol=ATOL)
    # more frames: one Gaussian per folded entry; frames do interact (the output is not per-frame 3D)
    x2 = random_folded(1, 4, grid=16, channels=8, per_frame=(40, 80), seed=4)
    with torch.no_grad():
        got2, per_frame = dec4d(x2, num_frames=4), dec3d(x2)
    assert len(got2) == 4
    assert not torch.allclose(got2[1]._xyz, per_frame[1]._xyz, atol=1e-3)


def test_encoder_4d_with_one_frame_equals_trellis_encoder():
    enc3d = randomize_(SLatEncoder(resolution=16, in_channels=12, model_channels=32, latent_channels=8,
                                   num_blocks=2, num_heads=2, attn_mode="swin", window_size=4), seed=5).eval()
    enc4d = inflate_slat_encoder(enc3d).eval()
    assert isinstance(enc4d, SLatEncoder4D)
    x = random_folded(2, 1, grid=16, channels=12, per_frame=(40, 80), seed=6)
    with torch.no_grad():
        _, mean3, logvar3 = enc3d(x, sample_posterior=False, return_raw=True)
        z4, mean4, logvar4 = enc4d(x, num_frames=1, sample_posterior=False, return_raw=True)
    torch.testing.assert_close(mean4, mean3, atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(logvar4, logvar3, atol=ATOL, rtol=ATOL)
    assert torch.equal(z4.coords, x.coords)


def test_vae_4d_frame_count_errors():
    dec4d = inflate_slat_decoder(_decoder_3d())
    x = random_folded(1, 4, grid=16, channels=8)
    with pytest.raises(FrameLayoutError):
        dec4d(x, num_frames=3)


# ---------------------------------------------------------------------------- 4D SLat flow
FLOW_3D_ARGS = dict(resolution=16, in_channels=8, model_channels=32, cond_channels=16, out_channels=8,
                    num_blocks=2, num_heads=2, patch_size=2, io_block_channels=[16], num_io_res_blocks=2,
                    qk_rms_norm=True)


def _flow_3d():
    return randomize_(SLatFlowModel(**FLOW_3D_ARGS), seed=7).eval()


def _duplicate_frames(x3d: SparseTensor, t: torch.Tensor, cond: torch.Tensor):
    """3D batch of B items -> 4D batch of B samples × 2 identical frames."""
    coords = []
    for b in range(x3d.batch_size):
        c = x3d.coords[x3d.layout[b]]
        for frame in range(2):
            cc = c.clone()
            cc[:, 0] = 2 * b + frame
            coords.append((cc, x3d.feats[x3d.layout[b]]))
    x4d = SparseTensor(torch.cat([f for _, f in coords]), torch.cat([c for c, _ in coords]))
    return x4d, t.repeat_interleave(2), cond.repeat_interleave(2, dim=0)


def test_inflated_flow_on_two_identical_frames_equals_trellis_flow():
    flow3d = _flow_3d()
    flow4d = inflate_slat_flow(flow3d, temporal_mean_mode="exact").eval()
    assert isinstance(flow4d, SLatFlow4DModel) and flow4d.conv_type == "3D_1D"
    sd3, sd4 = flow3d.state_dict(), flow4d.state_dict()
    assert set(sd3) < set(sd4) and all(k.startswith(TEMPORAL_KEY_PREFIXES) for k in set(sd4) - set(sd3))
    assert all(torch.equal(sd3[k], sd4[k]) for k in sd3)
    # documented identity init of the new blocks
    for block in list(flow4d.input_blocks_t) + list(flow4d.out_blocks_t):
        assert not block.conv2.conv.weight.any() and not block.conv2.conv.bias.any()
    skip = flow4d.out_blocks_t[0].skip_connection.weight
    assert torch.equal(skip, torch.cat([torch.eye(32), torch.zeros(32, 32)], 1))

    x3d = random_folded(2, 1, grid=16, channels=8, per_frame=(60, 120), seed=8)
    t = torch.tensor([700.0, 250.0])
    cond = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(9))
    x4d, t4d, cond4d = _duplicate_frames(x3d, t, cond)
    with torch.no_grad():
        want = flow3d(x3d, t, cond).feats
        got = flow4d(x4d, t4d, cond4d, num_frames=2)
    assert torch.equal(got.coords, x4d.coords)
    for b in range(2):
        for frame in range(2):
            torch.testing.assert_close(got.feats[x4d.layout[2 * b + frame]], want[x3d.layout[b]], atol=ATOL, rtol=ATOL)

    # the official pooling quirk (sum / (n + 1)) breaks this equality: the test can fail
    flow4d_q = inflate_slat_flow(flow3d, temporal_mean_mode="trellis").eval()
    with torch.no_grad():
        quirk = flow4d_q(x4d, t4d, cond4d, num_frames=2).feats
    assert not torch.allclose(quirk[x4d.layout[0]], want[x3d.layout[0]], atol=1e-3)


@pytest.mark.parametrize("conv_type", ["3D_1D", "3D_4D"])
def test_flow_gradients_reach_every_new_parameter(conv_type):
    flow4d = inflate_slat_flow(_flow_3d(), conv_type=conv_type)
    randomize_(flow4d, seed=10)  # perturb the zero-init params (conv2, [I | 0] skips, out layer, adaLN)
    flow4d.train()
    x = random_folded(1, 4, grid=16, channels=8, per_frame=(30, 60), seed=11)
    t = torch.tensor([900.0, 600.0, 300.0, 100.0])
    cond = torch.randn(4, 5, 16)
    out = flow4d(x, t, cond, num_frames=4)
    out.feats.square().mean().backward()
    new = [(n, p) for n, p in flow4d.named_parameters() if n.startswith(TEMPORAL_KEY_PREFIXES)]
    assert new
    dead = [n for n, p in new if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient for {dead}"


def test_flow_non_conv_type_runs_and_keeps_coords():
    flow4d = inflate_slat_flow(_flow_3d(), conv_type="non").eval()
    assert not any(n.startswith(TEMPORAL_KEY_PREFIXES) for n in flow4d.state_dict())
    x = random_folded(2, 2, grid=16, channels=8, per_frame=(30, 60), seed=12)
    with torch.no_grad():
        out = flow4d(x, torch.full((4,), 500.0), torch.randn(4, 5, 16), num_frames=2)
    assert torch.equal(out.coords, x.coords) and torch.isfinite(out.feats).all()


def test_flow_errors():
    flow4d = inflate_slat_flow(_flow_3d())
    x = random_folded(1, 3, grid=16, channels=8)
    with pytest.raises(FrameLayoutError, match=r"even \(valid T: 2, 4, 6"):
        flow4d(x, torch.full((3,), 500.0), torch.randn(3, 5, 16), num_frames=3)
    for bad in ("3D", "4D"):
        with pytest.raises(NotImplementedError, match="conv_type"):
            SLatFlow4DModel(**FLOW_3D_ARGS, conv_type=bad)
    with pytest.raises(ValueError, match="io_block_channels_t"):
        SLatFlow4DModel(**FLOW_3D_ARGS, io_block_channels_t=[16])
    with pytest.raises(ValueError, match="temporal_mean_mode"):
        SLatFlow4DModel(**FLOW_3D_ARGS, temporal_mean_mode="mean")


def test_registry_resolves_4d_slat_classes():
    assert get_model_class("ElasticSLatFlow4DModel") is SLatFlow4DModel
    assert get_model_class("SLatGaussianDecoder", {"pe_mode": "rope_t", "expand_self_attn": True}) \
        is SLatGaussianDecoder4D
    assert get_model_class("SLatEncoder", {"pe_mode": "rope_t"}) is SLatEncoder4D

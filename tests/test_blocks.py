"""Norms, embeddings, reshapes, precision conversion and transformer blocks.

The strongest checks load weights of TRELLIS's own tiny models (``../shared/trellis_reference/tiny``)
into our blocks and compare with the intermediate activations TRELLIS computed; the state-dict key sets
are compared with the manifests of the official checkpoints. Both are skipped when the reference folder
is absent (``SS4D_TRELLIS_FIXTURES`` points elsewhere, as in conftest.py).
"""
from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from trellis_ext.attention import MultiHeadAttention, naive_attention
from trellis_ext.modules import (
    AbsolutePositionEmbedder,
    ChannelLayerNorm32,
    FeedForwardNet,
    GroupNorm32,
    LayerNorm32,
    ModulatedSparseTransformerCrossBlock,
    ModulatedTransformerCrossBlock,
    SparseTransformerBlock,
    TimestepEmbedder,
    TransformerBlock,
    convert_module_to,
    convert_module_to_f16,
    convert_module_to_f32,
    patchify,
    pixel_shuffle_3d,
    timestep_embedding,
    unpatchify,
)
from trellis_ext.sparse import SparseTensor

REF = Path(os.environ.get("SS4D_TRELLIS_FIXTURES",
                          str(Path(__file__).resolve().parents[2] / "shared" / "trellis_reference")))
TINY, MANIFESTS = REF / "tiny", REF / "manifests"
needs_ref = pytest.mark.skipif(not TINY.is_dir(), reason="TRELLIS reference fixtures not available")
#: Suggested tolerance of the fixtures' README for an independent fp32 implementation.
FIXTURE_TOL = 1e-4
TOL = 1e-5


def _rand(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _randomize(module, seed=0):
    """Non-trivial weights (TRELLIS zero-inits gates and norms are 1): everything ~ N(0, 0.3²), norm
    weights around 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            base = 1.0 if name.endswith(("norm2.weight", "gamma")) else 0.0
            p.copy_(base + 0.3 * torch.randn(p.shape, generator=g))
    return module


@functools.lru_cache(maxsize=None)
def _load(model: str, part: str):
    from safetensors.torch import load_file

    return load_file(str(TINY / model / f"{part}.safetensors"))


def _prefixed(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# ------------------------------------------------------------------------------------------ norms
def test_norms_compute_in_fp32_and_cast_back():
    x = _rand(2, 5, 16, seed=1, scale=30.0)
    ln = _randomize(LayerNorm32(16, eps=1e-6))
    torch.testing.assert_close(ln(x), F.layer_norm(x, (16,), ln.weight, ln.bias, 1e-6))
    out = ln(x.half())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), ln(x.half().float()), atol=1e-2, rtol=0)

    gn = _randomize(GroupNorm32(4, 16))
    y = _rand(2, 16, 3, 3, 3, seed=2)
    torch.testing.assert_close(gn(y), F.group_norm(y, 4, gn.weight, gn.bias, gn.eps))
    assert gn(y.half()).dtype == torch.float16

    cln = _randomize(ChannelLayerNorm32(16))
    expected = F.layer_norm(y.permute(0, 2, 3, 4, 1), (16,), cln.weight, cln.bias, cln.eps).permute(0, 4, 1, 2, 3)
    torch.testing.assert_close(cln(y), expected)
    assert cln(y).is_contiguous() and sorted(cln.state_dict()) == ["bias", "weight"]


@needs_ref
def test_channel_layer_norm_against_ss_encoder_out_layer():
    """TRELLIS SS encoder out_layer = ChannelLayerNorm32 -> SiLU -> Conv3d."""
    sd, inter = _load("ss_enc", "model"), _load("ss_enc", "intermediates")
    cln = ChannelLayerNorm32(sd["out_layer.0.weight"].shape[0], eps=1e-6)
    cln.load_state_dict(_prefixed(sd, "out_layer.0."))
    out = F.conv3d(F.silu(cln(inter["middle_block"])), sd["out_layer.2.weight"], sd["out_layer.2.bias"], padding=1)
    torch.testing.assert_close(out, inter["out_layer"], atol=FIXTURE_TOL, rtol=FIXTURE_TOL)


# ------------------------------------------------------------------------------------------ embeddings
def test_absolute_position_embedding_formula_and_padding():
    ape = AbsolutePositionEmbedder(1024)
    coords = torch.tensor([[0, 1, 2], [63, 17, 5]])
    emb = ape(coords)
    freq_dim = 1024 // 3 // 2
    assert freq_dim == 170 and emb.shape == (2, 1024)
    assert torch.all(emb[:, 3 * 2 * freq_dim:] == 0) and emb[:, 3 * 2 * freq_dim:].shape[1] == 4
    for n in range(2):
        for axis in range(3):
            p = float(coords[n, axis])
            block = emb[n, axis * 2 * freq_dim:(axis + 1) * 2 * freq_dim]
            for i in (0, 1, 77, freq_dim - 1):
                f = 1.0 / 10000 ** (i / freq_dim)
                assert math.isclose(block[i].item(), math.sin(p * f), abs_tol=1e-5)  # sin first
                assert math.isclose(block[freq_dim + i].item(), math.cos(p * f), abs_tol=1e-5)
    assert AbsolutePositionEmbedder(768)(coords).shape == (2, 768)
    assert len(ape.state_dict()) == 0


@needs_ref
def test_absolute_position_embedding_equals_trellis_pos_emb_buffer():
    pos_emb = _load("ss_flow", "model")["pos_emb"]  # [8³, 64] for the 8³ grid, x-major
    res = round(pos_emb.shape[0] ** (1 / 3))
    ax = torch.arange(res)
    grid = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    torch.testing.assert_close(AbsolutePositionEmbedder(pos_emb.shape[1])(grid), pos_emb, atol=1e-6, rtol=0)


def test_timestep_embedding_is_cos_then_sin():
    t = torch.tensor([0.0, 3.0, 750.0])
    emb = timestep_embedding(t, 256)
    half = 128
    for n, tv in enumerate(t.tolist()):
        for i in (0, 5, 127):
            f = math.exp(-math.log(10000) * i / half)
            assert math.isclose(emb[n, i].item(), math.cos(tv * f), abs_tol=1e-4)
            assert math.isclose(emb[n, half + i].item(), math.sin(tv * f), abs_tol=1e-4)
    te = TimestepEmbedder(32)
    assert sorted(te.state_dict()) == ["mlp.0.bias", "mlp.0.weight", "mlp.2.bias", "mlp.2.weight"]
    assert te.mlp[0].in_features == 256
    expected = te.mlp[2](F.silu(te.mlp[0](emb)))
    torch.testing.assert_close(te(t), expected)


@needs_ref
def test_timestep_embedder_against_trellis():
    te = TimestepEmbedder(64)
    te.load_state_dict(_prefixed(_load("ss_flow", "model"), "t_embedder."))
    torch.testing.assert_close(te(_load("ss_flow", "inputs")["t"]), _load("ss_flow", "intermediates")["t_embedder"],
                               atol=FIXTURE_TOL, rtol=FIXTURE_TOL)


# ------------------------------------------------------------------------------------------ spatial
def test_patchify_roundtrip_and_channel_order():
    x = _rand(2, 3, 4, 6, 8, seed=3)
    p = patchify(x, 2)
    assert p.shape == (2, 24, 2, 3, 4)
    # channel c·8 + px·4 + py·2 + pz of patch (i, j, k) = x[c, 2i + px, 2j + py, 2k + pz]
    assert p[1, 2 * 8 + 1 * 4 + 0 * 2 + 1, 1, 2, 3] == x[1, 2, 3, 4, 7]
    torch.testing.assert_close(unpatchify(p, 2), x, atol=0, rtol=0)


def test_pixel_shuffle_3d_slot_order():
    x = torch.arange(2 * 8 * 1 * 1 * 1, dtype=torch.float32).reshape(1, 16, 1, 1, 1)
    y = pixel_shuffle_3d(x, 2)
    assert y.shape == (1, 2, 2, 2, 2)
    for c in range(2):
        for dx in range(2):
            for dy in range(2):
                for dz in range(2):
                    assert y[0, c, dx, dy, dz] == c * 8 + dx * 4 + dy * 2 + dz  # dz fastest


@needs_ref
def test_patchify_against_trellis_ss_flow_p2():
    sd, inter, inputs = _load("ss_flow_p2", "model"), _load("ss_flow_p2", "intermediates"), _load("ss_flow_p2", "inputs")
    tokens = patchify(inputs["x"], 2).flatten(2).transpose(1, 2)
    out = F.linear(tokens, sd["input_layer.weight"], sd["input_layer.bias"])
    torch.testing.assert_close(out, inter["input_layer"], atol=FIXTURE_TOL, rtol=FIXTURE_TOL)


@needs_ref
def test_pixel_shuffle_against_trellis_ss_decoder_upsample():
    sd, inter = _load("ss_dec", "model"), _load("ss_dec", "intermediates")
    h = F.conv3d(inter["blocks.0"], sd["blocks.1.conv.weight"], sd["blocks.1.conv.bias"], padding=1)
    torch.testing.assert_close(pixel_shuffle_3d(h, 2), inter["blocks.1"], atol=FIXTURE_TOL, rtol=FIXTURE_TOL)


# ------------------------------------------------------------------------------------------ precision
class _ConvWrapper(nn.Module):
    """Stand-in for a sparse conv: the weight lives at ``.conv.weight``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Module()
        self.conv.weight = nn.Parameter(torch.zeros(4, 3, 3, 3, 2))
        self.conv.bias = nn.Parameter(torch.zeros(4))


def test_precision_conversion_policy():
    block = ModulatedTransformerCrossBlock(16, 8, 2, qk_rms_norm=True)
    model = nn.ModuleDict({"block": block, "conv": nn.Conv3d(2, 2, 3), "sp": _ConvWrapper(), "gn": GroupNorm32(1, 2)})
    model.apply(convert_module_to_f16)
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    assert dtypes["block.self_attn.to_qkv.weight"] == torch.float16
    assert dtypes["block.adaLN_modulation.1.bias"] == torch.float16
    assert dtypes["conv.weight"] == torch.float16 and dtypes["sp.conv.weight"] == torch.float16
    assert dtypes["block.norm2.weight"] == torch.float32
    assert dtypes["block.self_attn.q_rms_norm.gamma"] == torch.float32
    assert dtypes["gn.weight"] == torch.float32
    convert_module_to(model, torch.bfloat16)  # direct call on a container recurses
    assert model["block"].mlp.mlp[0].weight.dtype == torch.bfloat16 and model["sp"].conv.weight.dtype == torch.bfloat16
    assert model["block"].norm2.weight.dtype == torch.float32
    model.apply(functools.partial(convert_module_to, dtype=torch.float16))
    assert model["conv"].weight.dtype == torch.float16
    convert_module_to_f32(model)
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())


# ------------------------------------------------------------------------------------------ keys vs manifests
def _manifest_block(name: str, prefix: str = "blocks.0."):
    manifest = json.loads((MANIFESTS / f"{name}.json").read_text())
    return [(k[len(prefix):], tuple(v["shape"]), v["dtype"]) for k, v in manifest["state_dict"].items()
            if k.startswith(prefix)]


_DTYPE_NAMES = {torch.float16: "F16", torch.float32: "F32"}


def _our_block(module: nn.Module):
    module.apply(convert_module_to_f16)  # the manifests are after TRELLIS's convert_to_fp16()
    return [(k, tuple(v.shape), _DTYPE_NAMES[v.dtype]) for k, v in module.state_dict().items()]


@pytest.mark.skipif(not MANIFESTS.is_dir(), reason="TRELLIS manifests not available")
@pytest.mark.parametrize("manifest,factory", [
    ("ss_flow_img_dit_L_16l8_fp16", lambda: ModulatedTransformerCrossBlock(1024, 1024, 16, qk_rms_norm=True)),
    ("slat_flow_img_dit_L_64l8p2_fp16", lambda: ModulatedSparseTransformerCrossBlock(1024, 1024, 16, qk_rms_norm=True)),
    ("slat_enc_swin8_B_64l8_fp16", lambda: SparseTransformerBlock(768, 12)),
    ("slat_dec_gs_swin8_B_64l8gs32_fp16", lambda: SparseTransformerBlock(768, 12, attn_mode="swin", window_size=8)),
])
def test_state_dict_matches_official_manifest(manifest, factory):
    with torch.device("meta"):
        ours = _our_block(factory())
    assert ours == _manifest_block(manifest)  # names, order, shapes and fp16 policy


# ------------------------------------------------------------------------------------------ block semantics
def _hand_attention(x, w_qkv, b_qkv, w_out, b_out, heads, gq=None, gk=None):
    c = x.shape[-1]
    q, k, v = (t.unflatten(-1, (heads, -1)) for t in (x @ w_qkv.T + b_qkv).split(c, -1))
    if gq is not None:
        d = c // heads
        q = F.normalize(q, dim=-1) * gq * math.sqrt(d)
        k = F.normalize(k, dim=-1) * gk * math.sqrt(d)
    return naive_attention(q, k, v).flatten(-2) @ w_out.T + b_out


def _hand_cross(x, ctx, sd, heads):
    c = x.shape[-1]
    q = (x @ sd["cross_attn.to_q.weight"].T + sd["cross_attn.to_q.bias"]).unflatten(-1, (heads, -1))
    k, v = ((ctx @ sd["cross_attn.to_kv.weight"].T + sd["cross_attn.to_kv.bias"]).split(c, -1))
    k, v = k.unflatten(-1, (heads, -1)), v.unflatten(-1, (heads, -1))
    return naive_attention(q, k, v).flatten(-2) @ sd["cross_attn.to_out.weight"].T + sd["cross_attn.to_out.bias"]


def _hand_modulated_block(x, t_emb, ctx, sd, heads):
    """The DiT block written out from its definition, reading the same weights."""
    c = x.shape[-1]
    mod = F.silu(t_emb) @ sd["adaLN_modulation.1.weight"].T + sd["adaLN_modulation.1.bias"]
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (m[:, None] for m in mod.split(c, -1))
    h = F.layer_norm(x, (c,), eps=1e-6) * (1 + scale_msa) + shift_msa
    h = _hand_attention(h, sd["self_attn.to_qkv.weight"], sd["self_attn.to_qkv.bias"], sd["self_attn.to_out.weight"],
                        sd["self_attn.to_out.bias"], heads, sd["self_attn.q_rms_norm.gamma"],
                        sd["self_attn.k_rms_norm.gamma"])
    x = x + gate_msa * h
    x = x + _hand_cross(F.layer_norm(x, (c,), sd["norm2.weight"], sd["norm2.bias"], eps=1e-6), ctx, sd, heads)
    h = F.layer_norm(x, (c,), eps=1e-6) * (1 + scale_mlp) + shift_mlp
    h = F.gelu(h @ sd["mlp.mlp.0.weight"].T + sd["mlp.mlp.0.bias"], approximate="tanh")
    return x + gate_mlp * (h @ sd["mlp.mlp.2.weight"].T + sd["mlp.mlp.2.bias"])


def test_modulated_block_equals_hand_composition():
    c, cc, heads = 24, 10, 3
    block = _randomize(ModulatedTransformerCrossBlock(c, cc, heads, qk_rms_norm=True), 1)
    x, t_emb, ctx = _rand(2, 9, c, seed=2), _rand(2, c, seed=3), _rand(2, 5, cc, seed=4)
    expected = _hand_modulated_block(x, t_emb, ctx, block.state_dict(), heads)
    torch.testing.assert_close(block(x, t_emb, ctx), expected, atol=TOL, rtol=TOL)


def _sparse_items(lengths, channels, seed=0):
    coords = torch.cat([torch.stack([torch.full((n,), b), torch.arange(n), torch.arange(n) % 3, torch.zeros(n, dtype=torch.long)], 1)
                        for b, n in enumerate(lengths)])
    return SparseTensor(_rand(sum(lengths), channels, seed=seed), coords.int())


def test_sparse_modulated_block_equals_dense_per_item():
    c, cc, heads = 24, 10, 3
    dense = _randomize(ModulatedTransformerCrossBlock(c, cc, heads, qk_rms_norm=True), 5)
    sparse = ModulatedSparseTransformerCrossBlock(c, cc, heads, qk_rms_norm=True)
    sparse.load_state_dict(dense.state_dict())
    x = _sparse_items([7, 1, 20], c, seed=6)
    t_emb, ctx = _rand(3, c, seed=7), _rand(3, 4, cc, seed=8)
    out = sparse(x, t_emb, ctx)
    assert torch.equal(out.coords, x.coords)
    for b, s in enumerate(x.layout):
        torch.testing.assert_close(out.feats[s], dense(x.feats[s][None], t_emb[b:b + 1], ctx[b:b + 1])[0],
                                   atol=TOL, rtol=TOL)


def test_plain_blocks_equal_hand_composition():
    c, heads = 16, 2
    block = _randomize(TransformerBlock(c, heads), 9)
    sd = block.state_dict()
    assert sorted(sd) == sorted(["attn.to_qkv.weight", "attn.to_qkv.bias", "attn.to_out.weight", "attn.to_out.bias",
                                 "mlp.mlp.0.weight", "mlp.mlp.0.bias", "mlp.mlp.2.weight", "mlp.mlp.2.bias"])
    x = _rand(2, 6, c, seed=10)
    h = x + _hand_attention(F.layer_norm(x, (c,), eps=1e-6), sd["attn.to_qkv.weight"], sd["attn.to_qkv.bias"],
                            sd["attn.to_out.weight"], sd["attn.to_out.bias"], heads)
    mlp = F.gelu(F.layer_norm(h, (c,), eps=1e-6) @ sd["mlp.mlp.0.weight"].T + sd["mlp.mlp.0.bias"], approximate="tanh")
    expected = h + mlp @ sd["mlp.mlp.2.weight"].T + sd["mlp.mlp.2.bias"]
    torch.testing.assert_close(block(x), expected, atol=TOL, rtol=TOL)
    sparse = SparseTransformerBlock(c, heads)
    sparse.load_state_dict(sd)
    xs = _sparse_items([6, 6], c, seed=10)
    torch.testing.assert_close(sparse(xs).feats, block(xs.feats.view(2, 6, c)).reshape(12, c), atol=TOL, rtol=TOL)
    assert sorted(FeedForwardNet(c).state_dict()) == ["mlp.0.bias", "mlp.0.weight", "mlp.2.bias", "mlp.2.weight"]


def test_share_mod_takes_the_modulation_directly():
    c, heads = 16, 2
    block = _randomize(ModulatedTransformerCrossBlock(c, 8, heads), 11)
    shared = ModulatedTransformerCrossBlock(c, 8, heads, share_mod=True)
    shared.load_state_dict({k: v for k, v in block.state_dict().items() if not k.startswith("adaLN")})
    assert not any(k.startswith("adaLN") for k in shared.state_dict())
    x, t_emb, ctx = _rand(2, 5, c, seed=12), _rand(2, c, seed=13), _rand(2, 3, 8, seed=14)
    torch.testing.assert_close(shared(x, block.adaLN_modulation(t_emb), ctx), block(x, t_emb, ctx))


@pytest.mark.parametrize("sparse", [False, True])
def test_checkpointing_gives_same_values_and_gradients(sparse):
    c, heads = 16, 2
    cls = ModulatedSparseTransformerCrossBlock if sparse else ModulatedTransformerCrossBlock
    results = []
    for use_checkpoint in (False, True):
        block = _randomize(cls(c, 8, heads, qk_rms_norm=True, use_checkpoint=use_checkpoint), 15).train()
        calls = []
        block.self_attn.register_forward_hook(lambda *_: calls.append(1))
        feats = _rand(10, c, seed=16).requires_grad_()
        x = _sparse_items([4, 6], c).replace(feats) if sparse else feats.view(2, 5, c)
        out = block(x, _rand(2, c, seed=17), _rand(2, 3, 8, seed=18))
        out = out.feats if sparse else out
        (out * _rand(*out.shape, seed=19)).sum().backward()
        assert len(calls) == (2 if use_checkpoint else 1)  # recomputed in backward when checkpointing
        results.append((out.detach(), feats.grad.clone(), block.self_attn.to_qkv.weight.grad.clone()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


class _TemporalSelfAttention(MultiHeadAttention):
    """Records the kwargs it receives (what a 4D attention subclass would read)."""

    seen: list = []

    def attend_self(self, q, k, v, **kwargs):
        _TemporalSelfAttention.seen.append(kwargs.get("num_frames"))
        return super().attend_self(q, k, v, **kwargs)


class _Block4D(ModulatedTransformerCrossBlock):
    """A 4D-style block: own attention class, a layer inserted between self- and cross-attention."""

    attention_cls = _TemporalSelfAttention

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.temporal = nn.Linear(self.channels, self.channels)

    def _between_attn_step(self, x, mod, num_frames=None, **kwargs):
        return x + self.temporal(x)


def test_block_extension_points():
    c, heads = 16, 2
    base = _randomize(ModulatedTransformerCrossBlock(c, 8, heads), 20)
    block = _Block4D(c, 8, heads)
    block.load_state_dict(base.state_dict(), strict=False)
    nn.init.zeros_(block.temporal.weight)
    nn.init.zeros_(block.temporal.bias)
    x, t_emb, ctx = _rand(4, 5, c, seed=21), _rand(4, c, seed=22), _rand(4, 3, 8, seed=23)
    _TemporalSelfAttention.seen.clear()
    torch.testing.assert_close(block(x, t_emb, ctx, num_frames=2), base(x, t_emb, ctx))  # zero layer = identity
    assert _TemporalSelfAttention.seen == [2]  # the kwarg reached the self-attention
    assert "temporal.weight" in block.state_dict()


# ------------------------------------------------------------------------------------------ TRELLIS fixtures
@needs_ref
def test_dense_dit_blocks_against_trellis_ss_flow():
    """blocks.i of TRELLIS's tiny SparseStructureFlowModel: input = input_layer + pos_emb."""
    sd, inter, inputs = _load("ss_flow", "model"), _load("ss_flow", "intermediates"), _load("ss_flow", "inputs")
    h = inter["input_layer"] + sd["pos_emb"]
    for i in range(2):
        block = ModulatedTransformerCrossBlock(64, 32, 4, qk_rms_norm=True).eval()
        block.load_state_dict(_prefixed(sd, f"blocks.{i}."))
        with torch.no_grad():
            h = block(h, inter["t_embedder"], inputs["cond"])
        torch.testing.assert_close(h, inter[f"blocks.{i}"], atol=FIXTURE_TOL, rtol=FIXTURE_TOL)


@needs_ref
@pytest.mark.parametrize("model", ["slat_enc", "slat_dec_gs"])
def test_sparse_swin_blocks_against_trellis_slat_vae(model):
    """blocks.i (swin, window 8, shift 4·(i % 2)) of TRELLIS's tiny SLat VAE: input = input_layer + APE."""
    sd, inter = _load(model, "model"), _load(model, "intermediates")
    x = SparseTensor(inter["input_layer.feats"], inter["input_layer.coords"])
    x = x.replace(x.feats + AbsolutePositionEmbedder(64)(x.coords[:, 1:]))
    for i in range(2):
        block = SparseTransformerBlock(64, 4, attn_mode="swin", window_size=8, shift_window=4 * (i % 2)).eval()
        block.load_state_dict(_prefixed(sd, f"blocks.{i}."))
        with torch.no_grad():
            x = block(x)
        torch.testing.assert_close(x.feats, inter[f"blocks.{i}.feats"], atol=FIXTURE_TOL, rtol=FIXTURE_TOL)


@needs_ref
def test_sparse_dit_blocks_against_trellis_slat_flow():
    """blocks.i of TRELLIS's tiny SLatFlowModel: input = input_blocks.1 (coarse grid) + APE of its coords."""
    sd, inter, inputs = _load("slat_flow", "model"), _load("slat_flow", "intermediates"), _load("slat_flow", "inputs")
    x = SparseTensor(inter["input_blocks.1.feats"], inter["input_blocks.1.coords"])
    x = x.replace(x.feats + AbsolutePositionEmbedder(64)(x.coords[:, 1:]))
    for i in range(2):
        block = ModulatedSparseTransformerCrossBlock(64, 32, 4, qk_rms_norm=True).eval()
        block.load_state_dict(_prefixed(sd, f"blocks.{i}."))
        with torch.no_grad():
            x = block(x, inter["t_embedder"], inputs["cond"])
        torch.testing.assert_close(x.feats, inter[f"blocks.{i}.feats"], atol=FIXTURE_TOL, rtol=FIXTURE_TOL)

"""4D structure flow: temporal attention, 4D blocks, equivalence with TRELLIS, inflation, SS VAE helpers.

The official-fixture numerics (``tiny/ss_flow_4d``, ``tiny_extra/ss_flow_4d_insert_temporal*``) run in
``test_ss4d_fixtures.py -k ss_flow_4d``; here: window partition, a brute-force attention reference,
equality with the 3D TRELLIS model (T = 1; inserted Temporal Layer for any T), gradients, dtypes, and
the per-frame structure-VAE helpers.
"""
import json
import math

import pytest
import torch
import torch.nn as nn

from conftest import SS4D_FIXTURES
from ss4d.frames import FrameLayoutError
from ss4d.models.ss_flow_4d import SparseStructureFlow4DModel, inflate_ss_flow
from ss4d.models.ss_vae_4d import decode_frames, encode_frames, freeze, occupied_coords
from ss4d.modules.rope import apply_rotary
from ss4d.modules.temporal_attention import (TemporalMultiHeadAttention, temporal_block_window,
                                             temporal_window_frames)
import ss4d.models  # noqa: F401  (registers the 4D classes)
from trellis_ext.models import CheckpointError, from_pretrained, save_pretrained
from trellis_ext.models.sparse_structure_flow import SparseStructureFlowModel
from trellis_ext.models.sparse_structure_vae import SparseStructureDecoder, SparseStructureEncoder

EXACT = dict(atol=1e-5, rtol=1e-5)
RES, IN_CH, WIDTH, COND_CH, COND_LEN, HEADS = 4, 8, 32, 16, 5, 2
TOKENS = RES ** 3
WINDOW = 8
#: README §2 table (frames per temporal window, w = 8) plus the notes' T = 32 example.
README_WINDOWS = {(4, 0): [4], (4, 4): [4], (6, 0): [6], (6, 4): [4, 2], (10, 0): [8, 2], (10, 4): [4, 6],
                  (32, 0): [8, 8, 8, 8], (32, 4): [4, 8, 8, 8, 4]}


# ------------------------------------------------------------------------------------------ helpers
@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-degenerate weights (as the fixture generator): W ~ N(0, 1/fan_in), biases 0.1·N, norm
    weights and RMS gammas 1 + 0.1·N. Zero-initialised gates / outputs would hide every difference."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        r = torch.randn(p.shape, generator=g)
        if name.endswith("gamma") or (p.dim() == 1 and ".norm" in name):
            p.copy_(1 + 0.1 * r)
        elif p.dim() == 1:
            p.copy_(0.1 * r)
        else:
            p.copy_(r / math.sqrt(p[0].numel()))
    return model


def trellis_flow(**kw) -> SparseStructureFlowModel:
    args = dict(resolution=RES, in_channels=IN_CH, model_channels=WIDTH, cond_channels=COND_CH, out_channels=IN_CH,
                num_blocks=2, num_heads=HEADS, patch_size=1, qk_rms_norm=True)
    args.update(kw)
    return randomize_(SparseStructureFlowModel(**args)).eval()


def flow_inputs(rows: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, IN_CH, RES, RES, RES, generator=g)
    t = torch.rand(rows, generator=g) * 1000
    cond = torch.randn(rows, COND_LEN, COND_CH, generator=g)
    return x, t, cond


# ------------------------------------------------------------------------------------------ windows
@pytest.mark.parametrize("frames,shift", sorted(README_WINDOWS))
def test_window_frames_match_readme(frames, shift):
    assert temporal_window_frames(frames, WINDOW, shift) == README_WINDOWS[(frames, shift)]


def test_window_frames_match_fixture_report():
    report = SS4D_FIXTURES / "tiny" / "REPORT.json"
    if not report.is_file():
        pytest.skip(f"{report} not found")
    cases = json.loads(report.read_text())["ss_flow_4d"]["cases"]
    for name, case in cases.items():
        frames = int(name.split("_T")[1].split("_")[0])
        for key, want in case["temporal_windows_frames"].items():
            assert temporal_window_frames(frames, WINDOW, int(key[len("shift"):])) == want, (name, key)


def test_block_shifts_and_attention_segments():
    model = SparseStructureFlow4DModel(RES, IN_CH, WIDTH, COND_CH, IN_CH, num_blocks=4, num_heads=HEADS,
                                       patch_size=1, pe_mode="rope_t", window_size=WINDOW, expand_self_attn=True)
    assert [temporal_block_window(i, WINDOW) for i in range(4)] == [(8, 0), (8, 4), (8, 0), (8, 4)]
    assert [b.self_attn.shift_window for b in model.blocks] == [0, 4, 0, 4]
    # B = 2 clips of T = 10 frames: per sample (8, 2) / (4, 6) frames of TOKENS tokens
    assert model.blocks[0].self_attn.self_attn_segments(20, TOKENS, num_frames=10) == [8 * TOKENS, 2 * TOKENS] * 2
    assert model.blocks[1].self_attn.self_attn_segments(20, TOKENS, num_frames=10) == [4 * TOKENS, 6 * TOKENS] * 2
    full = TemporalMultiHeadAttention(WIDTH, HEADS, attn_mode="full")
    assert full.self_attn_segments(12, TOKENS, num_frames=6) == [6 * TOKENS] * 2
    with pytest.raises(FrameLayoutError):
        full.self_attn_segments(10, TOKENS, num_frames=4)
    with pytest.raises(ValueError, match="num_frames"):
        full.self_attn_segments(10, TOKENS)


def reference_temporal_attention(attn: TemporalMultiHeadAttention, x: torch.Tensor, frames: int,
                                 window, shift: int) -> torch.Tensor:
    """Brute force: per sample, scores over all T·L tokens masked to equal window ids."""
    rows, length, channels = x.shape
    heads, dim = attn.num_heads, attn.head_dim
    q, k, v = attn.to_qkv(x).unflatten(-1, (3, heads, dim)).unbind(-3)           # [(B·T), L, H, D]
    if attn.use_rope_t:
        pos = (torch.arange(rows) % frames)[:, None].expand(rows, length)
        q, k = apply_rotary(q, pos, attn.rope_base), apply_rotary(k, pos, attn.rope_base)
    if attn.qk_rms_norm:
        q, k = attn.q_rms_norm(q), attn.k_rms_norm(k)
    window_of_frame = torch.zeros(frames, dtype=torch.long) if window is None else (torch.arange(frames) + shift) // window
    token_window = window_of_frame.repeat_interleave(length)                        # [T·L]
    allowed = token_window[:, None] == token_window[None, :]
    out = []
    for b in range(rows // frames):
        sl = slice(b * frames, (b + 1) * frames)
        qb, kb, vb = (t[sl].reshape(frames * length, heads, dim) for t in (q, k, v))
        scores = torch.einsum("ihd,jhd->hij", qb, kb) / math.sqrt(dim)
        probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        out.append(torch.einsum("hij,jhd->ihd", probs, vb).reshape(frames, length, channels))
    return attn.to_out(torch.cat(out))


@pytest.mark.parametrize("frames,window,shift,rope,rms", [
    (10, 8, 0, True, True), (10, 8, 4, True, True), (6, 4, 2, False, True), (5, None, 0, True, False)])
def test_temporal_attention_matches_masked_reference(frames, window, shift, rope, rms):
    attn = TemporalMultiHeadAttention(WIDTH, HEADS, attn_mode="full" if window is None else "windowed",
                                      window_size=window, shift_window=shift, use_rope_t=rope, qk_rms_norm=rms)
    randomize_(attn)
    x = torch.randn(2 * frames, 7, WIDTH)
    with torch.no_grad():
        got = attn(x, num_frames=frames)
        want = reference_temporal_attention(attn, x, frames, window, shift)
    torch.testing.assert_close(got, want, **EXACT)


# ------------------------------------------------------------------------------------------ equivalence with 3D
@pytest.mark.parametrize("window", [WINDOW, None])
def test_t1_equals_trellis(window):
    """T = 1: RoPE-t at frame 0 is the identity, a temporal window of one frame is per-frame attention."""
    model3d = trellis_flow()
    model4d = inflate_ss_flow(model3d, pe_mode="rope_t", expand_self_attn=True, window_size=window).eval()
    x, t, cond = flow_inputs(3)
    with torch.no_grad():
        want = model3d(x, t, cond)
        got = model4d(x, t, cond, num_frames=1)
    assert want.abs().max() > 0.1
    torch.testing.assert_close(got, want, **EXACT)


@pytest.mark.parametrize("frames", [3, 5])
def test_inserted_temporal_layer_equals_trellis_per_frame(frames):
    """The inflated Temporal-Layer variant (zero temporal adaLN) equals TRELLIS frame by frame, even
    though its cross-attention reads the non-affine norm4 (norm2's affine is absorbed into to_q)."""
    model3d = trellis_flow()
    assert (model3d.blocks[0].norm2.weight - 1).abs().max() > 0.01   # a non-trivial affine to absorb
    model4d = inflate_ss_flow(model3d, pe_mode="rope_t", insert_temporal=True).eval()
    x, t, cond = flow_inputs(2 * frames)
    with torch.no_grad():
        want = model3d(x, t, cond)
        got = model4d(x, t, cond, num_frames=frames)
        torch.testing.assert_close(got, want, **EXACT)
        # the equality is not vacuous: an open temporal gate mixes the frames
        model4d.blocks[0].adaLN_modulation_temporal[-1].bias.fill_(0.5)
        assert (model4d(x, t, cond, num_frames=frames) - want).abs().max() > 1e-3


def test_inflation_loads_trellis_weights_and_identity_temporal_init(tmp_path):
    model3d = trellis_flow()
    model4d = inflate_ss_flow(model3d, pe_mode="rope_t", expand_self_attn=True, window_size=WINDOW,
                              insert_temporal=True)
    src, dst = model3d.state_dict(), model4d.state_dict()
    new = sorted(set(dst) - set(src))
    assert new and all(".temp_attn." in k or ".adaLN_modulation_temporal." in k for k in new)
    for k, v in src.items():
        if k.endswith("cross_attn.to_q.weight") or k.endswith("cross_attn.to_q.bias"):
            continue  # norm2's affine absorbed (checked below)
        assert torch.equal(dst[k], v), k
    block3d, block4d = model3d.blocks[1], model4d.blocks[1]
    torch.testing.assert_close(block4d.cross_attn.to_q.weight, block3d.cross_attn.to_q.weight * block3d.norm2.weight)
    for block in model4d.blocks:
        lin = block.adaLN_modulation_temporal[-1]
        assert lin.weight.abs().max() == 0 and lin.bias.abs().max() == 0
    assert model4d.init_args["insert_temporal"] and model4d.init_args["pe_mode"] == "rope_t"
    # the inflated model round-trips through the checkpoint format under its registered class name
    save_pretrained(model4d, str(tmp_path / "ss_flow_4d"), name="SparseStructureFlow4DModel")
    reloaded = from_pretrained(str(tmp_path / "ss_flow_4d"))
    x, t, cond = flow_inputs(4)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x, t, cond, num_frames=2), model4d.eval()(x, t, cond, num_frames=2))
    with pytest.raises(TypeError, match="unknown 4D args"):
        inflate_ss_flow(model3d, windw_size=8)
    model3d.register_buffer("not_in_4d", torch.zeros(1))   # strict on the TRELLIS keys
    with pytest.raises(CheckpointError, match="not_in_4d"):
        inflate_ss_flow(model3d)


def test_fresh_model_temporal_layer_is_identity():
    """At construction (no inflation) the zero temporal adaLN makes temp_attn a no-op."""
    model = randomize_(SparseStructureFlow4DModel(RES, IN_CH, WIDTH, COND_CH, IN_CH, num_blocks=2, num_heads=HEADS,
                                                  patch_size=1, pe_mode="rope_t", insert_temporal=True))
    model.initialize_weights()
    assert all(b.adaLN_modulation_temporal[-1].weight.abs().max() == 0 for b in model.blocks)
    randomize_(model)
    for b in model.blocks:
        b.adaLN_modulation_temporal[-1].weight.data.zero_()
        b.adaLN_modulation_temporal[-1].bias.data.zero_()
    x, t, cond = flow_inputs(6)
    with torch.no_grad():
        ref = model(x, t, cond, num_frames=3)
        perm = torch.tensor([2, 1, 0, 5, 4, 3])  # reversing frames changes nothing without temporal mixing
        torch.testing.assert_close(model(x[perm], t[perm], cond[perm], num_frames=3), ref[perm], **EXACT)


def test_forward_checks_frame_layout():
    model = SparseStructureFlow4DModel(RES, IN_CH, WIDTH, COND_CH, IN_CH, num_blocks=1, num_heads=HEADS,
                                       patch_size=1, expand_self_attn=True)
    x, t, cond = flow_inputs(6)
    with pytest.raises(FrameLayoutError, match="4-frame"):
        model(x, t, cond, num_frames=4)
    with pytest.raises(FrameLayoutError, match="cond"):
        model(x, t, cond[:3], num_frames=3)
    with pytest.raises(ValueError, match="expand_self_attn"):
        SparseStructureFlow4DModel(RES, IN_CH, WIDTH, COND_CH, IN_CH, num_blocks=1, window_size=8)
    with pytest.raises(ValueError, match="pe_mode"):
        SparseStructureFlow4DModel(RES, IN_CH, WIDTH, COND_CH, IN_CH, num_blocks=1, pe_mode="rope")


# ------------------------------------------------------------------------------------------ gradients / dtypes
def test_gradients_reach_new_parameters():
    model = SparseStructureFlow4DModel(RES, IN_CH, WIDTH, COND_CH, IN_CH, num_blocks=2, num_heads=HEADS, patch_size=1,
                                       pe_mode="rope_t", qk_rms_norm=True, expand_self_attn=True,
                                       window_size=2, insert_temporal=True)
    randomize_(model)
    gates = [b.adaLN_modulation_temporal[-1] for b in model.blocks]
    for lin in gates:  # our identity init
        nn.init.zeros_(lin.weight)
        nn.init.zeros_(lin.bias)
    x, t, cond = flow_inputs(6)
    new = {n: p for n, p in model.named_parameters() if ".temp_attn." in n or ".adaLN_modulation_temporal." in n}

    model(x, t, cond, num_frames=3).square().mean().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    # at the identity init the temporal adaLN (shift / scale / gate) already receives gradient
    for n, p in new.items():
        if ".adaLN_modulation_temporal." in n:
            assert p.grad.abs().max() > 0, n

    model.zero_grad()
    with torch.no_grad():
        for lin in gates:
            lin.bias.normal_(std=0.1)
    model(x, t, cond, num_frames=3).square().mean().backward()
    for n, p in new.items():
        assert p.grad.abs().max() > 0, n


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_torso_close_to_fp32(dtype):
    model = randomize_(SparseStructureFlow4DModel(RES, IN_CH, WIDTH, COND_CH, IN_CH, num_blocks=2, num_heads=HEADS,
                                                  patch_size=1, pe_mode="rope_t", qk_rms_norm=True,
                                                  expand_self_attn=True, window_size=2, insert_temporal=True)).eval()
    x, t, cond = flow_inputs(6)
    with torch.no_grad():
        ref = model(x, t, cond, num_frames=3)
        try:
            got = model.convert_torso(dtype)(x, t, cond, num_frames=3)
        except RuntimeError as e:  # fp16 kernels may be missing on CPU builds
            pytest.skip(f"{dtype} unsupported on this device: {e}")
    assert got.dtype == torch.float32
    assert (got - ref).abs().max() < 0.05 * ref.abs().max()


# ------------------------------------------------------------------------------------------ SS VAE helpers
def test_occupied_coords_layout():
    batch, frames, res = 2, 3, 4
    logits = torch.full((batch, frames, 1, res, res, res), -1.0)
    logits[1, 2, 0, 1, 2, 3] = 2.0
    logits[0, 1, 0, 0, 0, 0] = 0.5
    logits[0, 0, 0, 3, 3, 3] = 1.0
    logits[1, 0, 0, 2, 2, 2] = 0.0   # not above the threshold
    want = torch.tensor([[0, 3, 3, 3], [1, 0, 0, 0], [5, 1, 2, 3]], dtype=torch.int32)
    got = occupied_coords(logits)
    assert got.dtype == torch.int32 and torch.equal(got, want)
    assert torch.equal(occupied_coords(logits.flatten(0, 1)), want)
    assert torch.equal(occupied_coords(logits, threshold=-2.0)[:, 0].bincount(), torch.full((6,), res ** 3))
    with pytest.raises(ValueError):
        occupied_coords(logits[:, :, 0])


def test_encode_decode_frames_chunked_equals_unchunked():
    torch.manual_seed(0)
    encoder = SparseStructureEncoder(1, 4, num_res_blocks=1, channels=[8, 16]).eval()
    decoder = SparseStructureDecoder(1, 4, num_res_blocks=1, channels=[16, 8]).eval()
    batch, frames, res = 2, 3, 8
    occ = torch.rand(batch, frames, 1, res, res, res) > 0.7
    with torch.no_grad():
        z = encode_frames(encoder, occ, chunk_size=100)
        assert z.shape == (batch, frames, 4, res // 2, res // 2, res // 2)
        torch.testing.assert_close(encode_frames(encoder, occ, chunk_size=2), z, **EXACT)
        torch.testing.assert_close(z[1, 2], encoder(occ[1, 2:3].float())[0], **EXACT)   # frame (b, t) -> [b, t]
        logits = decode_frames(decoder, z, chunk_size=100)
        assert logits.shape == (batch, frames, 1, res, res, res)
        torch.testing.assert_close(decode_frames(decoder, z, chunk_size=1), logits, **EXACT)
        torch.testing.assert_close(logits[0, 1], decoder(z[0, 1:2])[0], **EXACT)
    with pytest.raises(ValueError):
        encode_frames(encoder, occ.flatten(0, 1))


def test_freeze():
    decoder = SparseStructureDecoder(1, 4, num_res_blocks=1, channels=[8]).train()
    assert freeze(decoder) is decoder
    assert not decoder.training and not any(p.requires_grad for p in decoder.parameters())

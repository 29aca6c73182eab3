"""ss4d.time_chunks: chunk ranges and blend weights by hand; chunked = unchunked where exact."""
import pytest
import torch
from torch import nn

from ss4d import Pipeline
from ss4d.errors import InputError
from ss4d.frames import slice_sparse_frames
from ss4d.time_chunks import TimeChunkedFlow, chunk_ranges, chunk_weights
from ss4d.tiny import write_tiny_video_to_4d
from trellis_ext.sparse import SparseTensor

pytestmark = pytest.mark.usefixtures("one_thread")


def test_chunk_ranges_and_weights_by_hand():
    assert chunk_ranges(4, 8, 2) == [(0, 4)]
    assert chunk_ranges(10, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert chunk_ranges(12, 6, 0) == [(0, 6), (6, 12)]
    assert chunk_ranges(10, 6, 2) == [(0, 6), (4, 10)]
    w = chunk_weights(6, chunk_ranges(6, 4, 2))
    torch.testing.assert_close(w, torch.tensor([[1, 1, 2 / 3, 1 / 3, 0, 0], [0, 0, 1 / 3, 2 / 3, 1, 1]],
                                               dtype=torch.float64))
    for T, c, o in [(10, 4, 2), (32, 8, 6), (30, 8, 2), (128, 32, 8)]:
        torch.testing.assert_close(chunk_weights(T, chunk_ranges(T, c, o)).sum(0), torch.ones(T, dtype=torch.float64))
    for c, o in [(3, 0), (4, 3), (4, 4), (0, 0), (4, -2)]:
        with pytest.raises(InputError):
            chunk_ranges(8, c, o)


class _FrameLocal(nn.Module):
    """Output of each frame depends on that frame's input, time and condition only."""

    def forward(self, x, t, cond, num_frames):
        if isinstance(x, SparseTensor):
            frame_bias = (cond.mean((1, 2)) + t)[x.coords[:, 0].long()]
            return x.replace(torch.tanh(x.feats) * 2 + frame_bias[:, None])
        return torch.tanh(x) * 2 + (cond.mean((1, 2)) + t).view(-1, *[1] * (x.dim() - 1))


@pytest.mark.parametrize("chunk,overlap", [(2, 0), (4, 2), (6, 4), (4, 0)])
def test_chunked_equals_unchunked_for_a_frame_local_model(chunk, overlap):
    B, T = 2, 10
    gen = torch.Generator().manual_seed(0)
    t = torch.rand(B * T, generator=gen)
    cond = torch.randn(B * T, 3, 5, generator=gen)
    dense = torch.randn(B * T, 4, 2, 2, generator=gen)
    model, chunked = _FrameLocal(), TimeChunkedFlow(_FrameLocal(), chunk, overlap)
    torch.testing.assert_close(chunked(dense, t, cond, num_frames=T), model(dense, t, cond, num_frames=T))
    counts = torch.randint(1, 5, (B * T,), generator=gen)
    index = torch.repeat_interleave(torch.arange(B * T), counts)
    coords = torch.cat([index[:, None], torch.randint(0, 8, (len(index), 3), generator=gen)], 1).int()
    sparse = SparseTensor(torch.randn(len(index), 8, generator=gen), coords)
    torch.testing.assert_close(chunked(sparse, t, cond, num_frames=T).feats, model(sparse, t, cond, num_frames=T).feats)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pipe = Pipeline.from_pretrained(write_tiny_video_to_4d(str(tmp_path_factory.getbasetemp() / "tiny_ss4d")))
    flow = pipe.models["slat_flow_model"]
    T = 4
    gen = torch.Generator().manual_seed(3)
    coords = torch.cat([torch.arange(T).repeat_interleave(20)[:, None],
                        torch.randint(0, flow.resolution, (20 * T, 3), generator=gen)], 1).int()
    coords = torch.unique(coords, dim=0)   # sorted by frame, no repeated voxel
    x = SparseTensor(torch.randn(coords.shape[0], flow.in_channels, generator=gen), coords)
    cond = torch.randn(T, 4, flow.cond_channels, generator=gen)
    return flow, x, torch.full((T,), 500.0), cond, T


def test_slat_flow_in_one_chunk_is_the_flow_itself(tiny):
    flow, x, t, cond, T = tiny
    with torch.no_grad():
        assert torch.equal(TimeChunkedFlow(flow, T, 2)(x, t, cond, num_frames=T).feats,
                           flow(x, t, cond, num_frames=T).feats)


def test_slat_flow_in_disjoint_chunks_is_the_flow_on_each_chunk(tiny):
    """chunk 2, overlap 0: frames 0-1 come from the flow run on frames 0-1 alone, 2-3 likewise."""
    flow, x, t, cond, T = tiny
    with torch.no_grad():
        got = TimeChunkedFlow(flow, 2, 0)(x, t, cond, num_frames=T).feats
        full = flow(x, t, cond, num_frames=T).feats
        for a in (0, 2):
            sub, rows = slice_sparse_frames(x, T, a, a + 2)
            torch.testing.assert_close(got[rows], flow(sub, t[a:a + 2], cond[a:a + 2], num_frames=2).feats)
    assert not torch.allclose(got, full, atol=1e-4)   # cross-frame attention: chunking changes the result


def test_decoder_chunks(tiny, tmp_path_factory):
    """One chunk = the decoder; disjoint chunks = the decoder on each chunk; overlapping chunks blend
    the two chunks' raw parameters with the hand weights (frames 2, 3 of T=6, chunk 4, overlap 2)."""
    from ss4d.pipeline import GAUSSIAN_FIELDS
    from ss4d.time_chunks import decode_in_chunks

    pipe = Pipeline.from_pretrained(write_tiny_video_to_4d(str(tmp_path_factory.getbasetemp() / "tiny_ss4d")))
    decoder = pipe.models["slat_decoder_gs"]
    T = 6
    gen = torch.Generator().manual_seed(4)
    coords = torch.unique(torch.cat([torch.arange(T).repeat_interleave(12)[:, None],
                                     torch.randint(0, decoder.resolution, (12 * T, 3), generator=gen)], 1).int(), dim=0)
    slat = SparseTensor(torch.randn(coords.shape[0], 8, generator=gen), coords)
    with torch.no_grad():
        full = decoder(slat, num_frames=T)
        one = decode_in_chunks(decoder, slat, T, 6, 2, GAUSSIAN_FIELDS)
        assert all(torch.equal(a._xyz, b._xyz) for a, b in zip(one, full))
        parts = [decoder(slice_sparse_frames(slat, T, a, a + 2)[0], num_frames=2) for a in (0, 2, 4)]
        disjoint = decode_in_chunks(decoder, slat, T, 2, 0, GAUSSIAN_FIELDS)
        for f in range(T):
            torch.testing.assert_close(disjoint[f]._xyz, parts[f // 2][f % 2]._xyz)
        blended = decode_in_chunks(decoder, slat, T, 4, 2, GAUSSIAN_FIELDS)
        first = decoder(slice_sparse_frames(slat, T, 0, 4)[0], num_frames=4)
        second = decoder(slice_sparse_frames(slat, T, 2, 6)[0], num_frames=4)
    for f, (w0, w1) in {2: (2 / 3, 1 / 3), 3: (1 / 3, 2 / 3)}.items():
        for name in ("_xyz", "_opacity", "_features_dc"):
            want = w0 * getattr(first[f], name) + w1 * getattr(second[f - 2], name)
            torch.testing.assert_close(getattr(blended[f], name), want)
    torch.testing.assert_close(blended[0]._xyz, first[0]._xyz)
    torch.testing.assert_close(blended[5]._xyz, second[3]._xyz)
    # decode only frames 5 and 0 (chunk 4, overlap 2 over 10 frames: 4 chunks, 2 of them needed)
    T = 10
    coords = torch.unique(torch.cat([torch.arange(T).repeat_interleave(12)[:, None],
                                     torch.randint(0, decoder.resolution, (12 * T, 3), generator=gen)], 1).int(), dim=0)
    slat = SparseTensor(torch.randn(coords.shape[0], 8, generator=gen), coords)
    calls = []
    handle = decoder.register_forward_pre_hook(lambda m, a, k: calls.append(k.get("num_frames")), with_kwargs=True)
    try:
        with torch.no_grad():
            every = decode_in_chunks(decoder, slat, T, 4, 2, GAUSSIAN_FIELDS)
            n_all = len(calls)
            some = decode_in_chunks(decoder, slat, T, 4, 2, GAUSSIAN_FIELDS, frames=[5, 0])
    finally:
        handle.remove()
    assert n_all == 4 and len(calls) - n_all == 3   # chunks (0,4), (2,6), (4,8) hold frame 0 or 5
    for g, f in zip(some, (5, 0)):
        for name in ("_xyz", "_opacity", "_features_dc", "_scaling", "_rotation"):
            assert torch.equal(getattr(g, name), getattr(every[f], name))
    with pytest.raises(InputError, match="frames to decode"):
        decode_in_chunks(decoder, slat, T, 4, 2, GAUSSIAN_FIELDS, frames=[10])


def test_pipeline_time_chunk_options(tiny, tmp_path_factory):
    """Through Pipeline.run: a chunk as long as the clip changes nothing; shorter chunks run."""
    import numpy as np

    pipe = Pipeline.from_pretrained(write_tiny_video_to_4d(str(tmp_path_factory.getbasetemp() / "tiny_ss4d")))
    frames = [np.zeros((64, 64, 4), np.uint8) for _ in range(4)]
    for t, f in enumerate(frames):
        f[16:44, 20 + 2 * t:40 + 2 * t] = (200, 80, 40, 255)
    kw = dict(seed=1, progress=False, ss_steps=1, slat_steps=2)
    ref = pipe.run(frames, **kw)
    same = pipe.run(frames, time_chunk=4, time_overlap=2, **kw)
    assert torch.equal(same.slat.feats, ref.slat.feats)
    assert all(torch.equal(a._xyz, b._xyz) for a, b in zip(same.gaussians, ref.gaussians))
    chunked = pipe.run(frames, time_chunk=2, **kw)
    assert chunked.slat.feats.shape == ref.slat.feats.shape and torch.isfinite(chunked.slat.feats).all()
    assert not torch.allclose(chunked.slat.feats, ref.slat.feats, atol=1e-4)
    assert chunked.params["slat"]["time_chunk"] == 2
    with pytest.raises(InputError, match="even chunk"):
        pipe.run(frames, time_chunk=3, **kw)


def test_flicker_measure_by_hand():
    from types import SimpleNamespace

    from ss4d.time_chunks import border_pairs, frame_jumps

    def g(x, c, o):
        return SimpleNamespace(_xyz=torch.tensor([[x, 0.0, 0.0], [x + 2, 0.0, 0.0]]),
                               _features_dc=torch.full((2, 1, 3), c), _opacity=torch.full((2, 1), o))

    jumps = frame_jumps([g(0, 0, 0), g(3, 0, 0), g(3, 0, 4), g(3, 1, 4)])
    torch.testing.assert_close(jumps, torch.tensor([3.0, 4.0, 3 ** 0.5]))
    assert border_pairs(8, 4, 0) == [3]
    assert border_pairs(6, 4, 2) == [1, 2, 3]
    assert border_pairs(4, 4, 2) == []

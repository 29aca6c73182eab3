"""Time-chunked SLat flow and 4D decoder for long clips: overlapping windows of frames, blended outputs.

The SLat flow's cross-frame attention spans the whole clip, so its memory grows with T.
:class:`TimeChunkedFlow` wraps a 4D flow model and evaluates it on overlapping chunks of
``chunk`` frames (starting every ``chunk - overlap`` frames; the last chunk ends at the clip's
end), then blends the chunk outputs per frame: weight 1 inside a chunk, linear ramps across each
overlap, normalised so the weights of every frame sum to 1 (a smooth cross-fade, no hard jump at a
border). Sampling with the wrapped model is the MultiDiffusion-style scheme: every step's velocity
is the blend of the chunks' velocities.

Where it is exact: a clip no longer than ``chunk`` runs in one piece (the wrapped model itself);
for a model without cross-frame mixing the blend equals the unchunked output for any chunking
(``tests/test_time_chunks.py``). With cross-frame attention chunked ≠ unchunked: frames see
``chunk`` frames of context instead of T.

:func:`decode_in_chunks` does the same for the 4D Gaussian decoder (whose 4D windows also mix
frames), blending the raw Gaussian parameters of a frame decoded by two chunks.

Chunks start on even frames and ``chunk`` / ``overlap`` are even, so the SLat flow's frame pairs
(2k, 2k+1) are never split.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from trellis_ext.sparse import SparseTensor

from .errors import InputError
from .frames import slice_frames, slice_sparse_frames, unfold_frames

__all__ = ["chunk_ranges", "chunk_weights", "TimeChunkedFlow", "decode_in_chunks", "frame_jumps", "border_pairs",
           "FRAME_ALIGN"]

#: Chunk starts, sizes and overlaps are multiples of this (the SLat flow packs frame pairs).
FRAME_ALIGN = 2


def chunk_ranges(num_frames: int, chunk: int, overlap: int) -> List[Tuple[int, int]]:
    """[(start, stop)] of the chunks covering ``num_frames`` frames (see the module docstring)."""
    if chunk < FRAME_ALIGN or chunk % FRAME_ALIGN or overlap < 0 or overlap % FRAME_ALIGN or overlap >= chunk:
        raise InputError(f"time chunks need an even chunk >= {FRAME_ALIGN} and an even overlap in [0, chunk); got "
                         f"chunk {chunk}, overlap {overlap}", "e.g. chunk 32, overlap 8")
    if num_frames <= chunk:
        return [(0, num_frames)]
    stride = chunk - overlap
    starts = list(range(0, num_frames - chunk, stride)) + [num_frames - chunk]
    return [(s, s + chunk) for s in starts]


def chunk_weights(num_frames: int, ranges: List[Tuple[int, int]]) -> torch.Tensor:
    """[n_chunks, T] blend weights: 1 inside a chunk, linear ramps where chunks overlap; columns sum to 1."""
    w = torch.zeros(len(ranges), num_frames, dtype=torch.float64)
    for i, (a, b) in enumerate(ranges):
        ramp = torch.ones(b - a, dtype=torch.float64)
        if i > 0:   # fade in over the overlap with the previous chunk
            n = max(ranges[i - 1][1] - a, 0)
            ramp[:n] = torch.arange(1, n + 1, dtype=torch.float64) / (n + 1)
        if i + 1 < len(ranges):   # fade out over the overlap with the next chunk
            n = max(b - ranges[i + 1][0], 0)
            ramp[b - a - n:] = torch.minimum(ramp[b - a - n:], torch.arange(n, 0, -1, dtype=torch.float64) / (n + 1))
        w[i, a:b] = ramp
    return w / w.sum(0, keepdim=True)


class TimeChunkedFlow(nn.Module):
    """A 4D flow evaluated on overlapping time chunks (see the module docstring).

    forward(x [(B·T), C, ...] dense or SparseTensor folded (b·T + t, x, y, z), t [B·T],
    cond [B·T, L, C], num_frames=T) -> like ``model``'s output.
    """

    def __init__(self, model: nn.Module, chunk: int, overlap: int):
        super().__init__()
        chunk_ranges(chunk, chunk, overlap)   # validates
        self.model, self.chunk, self.overlap = model, chunk, overlap

    def forward(self, x, t: torch.Tensor, cond: torch.Tensor, num_frames: int, **kwargs):
        ranges = chunk_ranges(num_frames, self.chunk, self.overlap)
        if len(ranges) == 1:
            return self.model(x, t, cond, num_frames=num_frames, **kwargs)
        weights = chunk_weights(num_frames, ranges)
        out = None
        for (a, b), w in zip(ranges, weights):
            sub_t, sub_cond = slice_frames(t, num_frames, a, b), slice_frames(cond, num_frames, a, b)
            if isinstance(x, SparseTensor):
                sub, rows = slice_sparse_frames(x, num_frames, a, b)
                y = self.model(sub, sub_t, sub_cond, num_frames=b - a, **kwargs).feats
                frame = x.coords[rows, 0].long() % num_frames
                contrib = y * w.to(y.device, y.dtype)[frame].view(-1, *[1] * (y.dim() - 1))
                if out is None:
                    out = torch.zeros((x.feats.shape[0],) + tuple(y.shape[1:]), dtype=y.dtype, device=y.device)
                out.index_add_(0, rows, contrib)
            else:
                y = self.model(slice_frames(x, num_frames, a, b), sub_t, sub_cond, num_frames=b - a, **kwargs)
                y = unfold_frames(y, b - a) * w[a:b].to(y.device, y.dtype).view(1, -1, *[1] * (y.dim() - 1))
                if out is None:
                    out = torch.zeros((y.shape[0], num_frames) + tuple(y.shape[2:]), dtype=y.dtype, device=y.device)
                out[:, a:b] += y
        if isinstance(x, SparseTensor):
            return x.replace(out)
        return out.flatten(0, 1)


def decode_in_chunks(decoder: nn.Module, slat: SparseTensor, num_frames: int, chunk: int, overlap: int,
                     fields: Tuple[str, ...], frames: Optional[Sequence[int]] = None) -> list:
    """The 4D Gaussian decoder on overlapping time chunks (one sample, B = 1).

    Every chunk decodes its frames; a frame covered by several chunks gets the weighted sum
    (:func:`chunk_weights`) of their Gaussian parameters ``fields`` (raw, before activation): the
    chunks decode the same voxels of that frame in the same order, so the Gaussians correspond one
    to one. Returns one ``Gaussian`` per frame, or, with ``frames``, one per listed frame (in that
    order): only the chunks holding a listed frame are decoded, and those frames come out exactly
    as in the full chunked decode.
    """
    ranges = chunk_ranges(num_frames, chunk, overlap)
    wanted = sorted(set(range(num_frames) if frames is None else (int(f) for f in frames)))
    if wanted and not (0 <= wanted[0] and wanted[-1] < num_frames):
        raise InputError(f"frames to decode must be in 0..{num_frames - 1}, got {list(frames)}")
    if len(ranges) == 1:
        out = decoder(slat, num_frames=num_frames)
        return out if frames is None else [out[f] for f in frames]
    weights = chunk_weights(num_frames, ranges)
    out: list = [None] * num_frames
    for (a, b), w in zip(ranges, weights):
        if not any(a <= f < b for f in wanted):
            continue
        sub, _ = slice_sparse_frames(slat, num_frames, a, b)
        for i, g in enumerate(decoder(sub, num_frames=b - a)):
            f = a + i
            for name in fields:
                v = getattr(g, name, None)
                if v is not None:
                    setattr(g, name, v * float(w[f]))
            if out[f] is None:
                out[f] = g
            else:
                for name in fields:
                    v = getattr(g, name, None)
                    if v is not None:
                        setattr(out[f], name, getattr(out[f], name) + v)
    return out if frames is None else [out[f] for f in frames]


def frame_jumps(gaussians: list) -> torch.Tensor:
    """Flicker measure: [T-1] size of the change between consecutive frames of a per-frame summary
    (centroid of the Gaussians' positions, mean raw colour, mean raw opacity), L2 norm.

    Compare :func:`border_pairs` (pairs that straddle a chunk border) with the other pairs: a
    seamless stitch shows no larger jumps at the borders than inside the chunks.
    """
    summary = torch.stack([torch.cat([g._xyz.float().mean(0), g._features_dc.float().reshape(len(g._xyz), -1).mean(0),
                                      g._opacity.float().reshape(-1).mean()[None]]) for g in gaussians])
    return (summary[1:] - summary[:-1]).norm(dim=1)


def border_pairs(num_frames: int, chunk: int, overlap: int) -> List[int]:
    """Indices p of the frame pairs (p, p+1) where the blend weights change chunk, i.e. the pairs
    inside an overlap or across a border between two chunks."""
    ranges = chunk_ranges(num_frames, chunk, overlap)
    w = chunk_weights(num_frames, ranges)
    return [p for p in range(num_frames - 1) if not torch.equal(w[:, p], w[:, p + 1])]

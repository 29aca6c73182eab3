"""4D structure VAE: TRELLIS's dense ``SparseStructureEncoder`` / ``SparseStructureDecoder`` per frame.

SS4D has no 4D structure VAE of its own: every frame's 64³ occupancy is encoded to an 8×16³ latent and
decoded back independently with TRELLIS's ``ss_dec_conv3d_16l8_fp16`` (frozen during 4D training).
These helpers apply the 3D models to clips, in chunks of frames to bound activation memory:

* ``encode_frames``  occupancy [B, T, 1, 64, 64, 64] -> latents [B, T, 8, 16, 16, 16]
* ``decode_frames``  latents [B, T, 8, 16, 16, 16] -> logits [B, T, 1, 64, 64, 64]
* ``occupied_coords`` logits -> coords [N, 4] int32 ``(b·T + t, x, y, z)`` (the 4D sparse layout of
  ``ss4d.frames``: rows sorted by folded index, then x, y, z; contiguous per (b, t) entry)
* ``freeze`` -> requires_grad False + eval mode.

The sizes above are the released ones; any resolution / channel count the 3D models accept works.
The helpers do not change the autograd mode: call them under ``torch.no_grad()`` (as for a frozen VAE)
so that chunking actually bounds memory.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ss4d.frames import fold_frames, unfold_frames

__all__ = ["encode_frames", "decode_frames", "occupied_coords", "freeze", "DEFAULT_CHUNK_FRAMES",
           "OCCUPANCY_THRESHOLD"]

#: Frames per encoder / decoder call (bounds the activations of one pass; lower it if memory is tight).
DEFAULT_CHUNK_FRAMES = 16
#: Decoder logits above this are occupied (the official pipeline uses logit > 0).
OCCUPANCY_THRESHOLD = 0.0
#: Clip tensors are [B, T, C, X, Y, Z].
CLIP_DIMS = 6
#: Folded per-frame tensors are [(B·T), C, X, Y, Z].
FOLDED_DIMS = 5


def _check_clip(x: torch.Tensor, what: str) -> None:
    if x.dim() != CLIP_DIMS:
        raise ValueError(f"{what} must be a clip tensor [B, T, C, X, Y, Z]; got shape {list(x.shape)}")


def _per_frame(fn: Callable[[torch.Tensor], torch.Tensor], clip: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Apply ``fn`` ([n, ...] -> [n, ...]) to the folded frames of ``clip`` [B, T, ...] in chunks of
    ``chunk_size`` frames; returns [B, T, ...]."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 frame, got {chunk_size}")
    folded = fold_frames(clip)
    out = torch.cat([fn(folded[i:i + chunk_size]) for i in range(0, folded.shape[0], chunk_size)], dim=0)
    return unfold_frames(out, clip.shape[1])


def encode_frames(encoder: nn.Module, occupancy: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_FRAMES,
                  sample_posterior: bool = False) -> torch.Tensor:
    """Encode every frame of a clip with a TRELLIS ``SparseStructureEncoder``.

    Args:
        encoder: the 3D structure encoder.
        occupancy: [B, T, 1, R, R, R] (bool / integer / float; cast to the encoder's input dtype).
        chunk_size: frames per encoder call.
        sample_posterior: draw z = mean + σ·ε instead of the posterior mean (default: the mean, as the
            TRELLIS / SS4D training latents are stored).

    Returns:
        latents [B, T, latent_channels, r, r, r] on the encoder's latent grid (r = R / 2^(levels-1);
        16³ for the released 64³ encoder).
    """
    _check_clip(occupancy, "occupancy")
    dtype = encoder.input_layer.weight.dtype
    return _per_frame(lambda x: encoder(x.to(dtype), sample_posterior=sample_posterior), occupancy, chunk_size)


def decode_frames(decoder: nn.Module, latents: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_FRAMES) -> torch.Tensor:
    """Decode every frame of a clip with a TRELLIS ``SparseStructureDecoder``.

    Args:
        decoder: the 3D structure decoder.
        latents: [B, T, latent_channels, r, r, r].
        chunk_size: frames per decoder call.

    Returns:
        occupancy logits [B, T, out_channels (1), R, R, R] (R = 64 for the released 16³ decoder).
    """
    _check_clip(latents, "latents")
    dtype = decoder.input_layer.weight.dtype
    return _per_frame(lambda z: decoder(z.to(dtype)), latents, chunk_size)


def occupied_coords(logits: torch.Tensor, threshold: float = OCCUPANCY_THRESHOLD) -> torch.Tensor:
    """Voxels whose logit exceeds ``threshold``, in the 4D sparse layout.

    Args:
        logits: [B, T, 1, X, Y, Z] clip logits, or already folded [(B·T), 1, X, Y, Z] (row = b·T + t,
            e.g. the pipeline's single clip).
        threshold: occupancy threshold on the logits (strictly greater, as the official ``> 0``).

    Returns:
        coords [N, 4] int32, columns (b·T + t, x, y, z), sorted by folded index then x, y, z.
    """
    if logits.dim() == CLIP_DIMS:
        logits = fold_frames(logits)
    if logits.dim() != FOLDED_DIMS or logits.shape[1] != 1:
        raise ValueError(f"logits must be [B, T, 1, X, Y, Z] or [(B·T), 1, X, Y, Z]; got {list(logits.shape)}")
    return torch.argwhere(logits[:, 0] > threshold).to(torch.int32)


def freeze(model: nn.Module) -> nn.Module:
    """Freeze a model for use inside 4D training: no parameter gradients, eval mode. Returns it."""
    model.requires_grad_(False)
    return model.eval()

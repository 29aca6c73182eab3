"""Latent encoding of dataset frames and dataset-wide latent statistics.

* SS latents: each frame's 64^3 occupancy -> TRELLIS ``SparseStructureEncoder`` (posterior mean)
  -> ``[8, 16, 16, 16]`` (not normalised; TRELLIS's SS flow uses them raw).
* SLat latents: each frame's aggregated DINOv2 features -> SLat encoder (posterior mean) ->
  ``[N, 8]`` on the frame's kept voxels. A 4D encoder (whose ``forward`` takes ``num_frames``)
  gets the whole clip at once with coordinates ``[t, x, y, z]`` (batch index = frame, batch
  size 1 per clip); a 3D ``SLatEncoder`` encodes the frames independently.
* Statistics: per-channel ``mean`` and ``std = sqrt(E[x^2] - mean^2)`` over every latent vector of
  the dataset (TRELLIS ``stat_latent.py`` semantics; used as ``slat_normalization``).

Encoders are loaded with ``trellis_ext.models.from_pretrained(path)`` (``<path>.json`` +
``<path>.safetensors``).
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import torch

from ..frames import fold_sparse_frames
from .voxelize import dense_grid


class LatentStats:
    """Streaming per-channel mean / std accumulator (float64), mergeable across shards."""

    def __init__(self, channels: int | None = None):
        self.count = 0
        self.sum = None if channels is None else np.zeros(channels)
        self.sumsq = None if channels is None else np.zeros(channels)

    def update(self, x: np.ndarray) -> None:
        """Add latent vectors ``x`` [N, C] (or [C, ...] grids flattened by the caller)."""
        x = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
        if self.sum is None:
            self.sum, self.sumsq = np.zeros(x.shape[1]), np.zeros(x.shape[1])
        if x.shape[1] != len(self.sum):
            raise ValueError(f"channel mismatch: {x.shape[1]} vs {len(self.sum)}")
        self.count += len(x)
        self.sum += x.sum(0)
        self.sumsq += (x * x).sum(0)

    def merge(self, other: "LatentStats") -> None:
        if other.count == 0:
            return
        if self.sum is None:
            self.sum, self.sumsq = np.zeros_like(other.sum), np.zeros_like(other.sumsq)
        self.count += other.count
        self.sum += other.sum
        self.sumsq += other.sumsq

    def result(self) -> dict:
        """{"mean": [C], "std": [C], "count": N}."""
        if not self.count:
            raise ValueError("no latents accumulated")
        mean = self.sum / self.count
        var = np.maximum(self.sumsq / self.count - mean * mean, 0.0)
        return {"mean": mean.tolist(), "std": np.sqrt(var).tolist(), "count": int(self.count)}

    def save(self, path: str | Path) -> dict:
        res = self.result()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(res, indent=1))
        return res


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """``trellis_ext.models.from_pretrained(path)`` in eval mode (fp32 on CPU)."""
    import ss4d.models  # noqa: F401  (registers the 4D classes (SLatEncoder4D...) of SS4D checkpoints)
    from trellis_ext.models import from_pretrained

    overrides = {"use_fp16": False} if torch.device(device).type == "cpu" else {}
    try:
        model = from_pretrained(str(path), **overrides)
    except TypeError:
        model = from_pretrained(str(path))
    return model.to(device).eval()


def encoder_name(path: str | Path) -> str:
    """Folder name for an encoder's outputs: the checkpoint stem (``ss_enc_conv3d_16l8_fp16``)."""
    name = Path(str(path)).name
    for ext in (".json", ".safetensors"):
        name = name.removesuffix(ext)
    return name


@torch.no_grad()
def encode_ss_latents(encoder: torch.nn.Module, voxels: list[np.ndarray], resolution: int,
                      batch_size: int = 4) -> np.ndarray:
    """Per-frame occupancy -> SS latents float32 [T, C, r, r, r] (posterior mean)."""
    dev = next(encoder.parameters()).device
    out = []
    for i in range(0, len(voxels), batch_size):
        grids = np.stack([dense_grid(v, resolution) for v in voxels[i:i + batch_size]])[:, None]
        x = torch.as_tensor(grids, dtype=torch.float32, device=dev)
        z = _call(encoder, x)
        out.append(z.float().cpu().numpy())
    return np.concatenate(out, 0)


@torch.no_grad()
def encode_slat_latents(encoder: torch.nn.Module, frames: list[tuple[np.ndarray, np.ndarray]]
                        ) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(indices [N_t, 3], feats [N_t, C])] per frame -> [(indices, latents [N_t, L])]."""
    from trellis_ext.sparse import SparseTensor

    dev = next(encoder.parameters()).device
    coords, feats = fold_sparse_frames([[idx for idx, _ in frames]], [[f for _, f in frames]])
    x = SparseTensor(feats.to(dev), coords.to(dev))
    kwargs = {"num_frames": len(frames)} if "num_frames" in inspect.signature(encoder.forward).parameters else {}
    z = _call(encoder, x, **kwargs)
    zf = (z.feats if hasattr(z, "feats") else z).float().cpu().numpy()
    zc = (z.coords if hasattr(z, "coords") else coords).cpu().numpy()
    out = []
    for t, (idx, _) in enumerate(frames):
        sel = zc[:, 0] == t
        out.append((zc[sel, 1:].astype(np.int64), zf[sel]))
    return out


def _call(encoder, x, **kwargs):
    try:
        return encoder(x, sample_posterior=False, **kwargs)
    except TypeError:
        return encoder(x, **kwargs)

"""Dense 3D reshapes: patchify / unpatchify and the 3D pixel shuffle (TRELLIS channel orders).

* ``patchify(x, p)``: [B, C, X, Y, Z] -> [B, C·p³, X/p, Y/p, Z/p]; output channel
  = c·p³ + px·p² + py·p + pz (c major, then the offsets inside the patch, z fastest).
* ``unpatchify(x, p)``: the inverse.
* ``pixel_shuffle_3d(x, s)``: [B, C·s³, X, Y, Z] -> [B, C, X·s, Y·s, Z·s]; input channel
  c·s³ + dx·s² + dy·s + dz goes to voxel (x·s + dx, y·s + dy, z·s + dz) -- the 8 sub-voxel slots of
  s = 2 are ordered (dx, dy, dz) with dz fastest. (``pixel_shuffle_3d`` == ``unpatchify``.)
"""
from __future__ import annotations

import torch

__all__ = ["patchify", "unpatchify", "pixel_shuffle_3d"]

#: This module handles [B, C, X, Y, Z] tensors.
SPATIAL_DIMS = 3


def _check(x: torch.Tensor, name: str) -> None:
    if x.dim() != 2 + SPATIAL_DIMS:
        raise ValueError(f"{name} expects [B, C, X, Y, Z]; got {tuple(x.shape)}")


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, C, X, Y, Z] -> [B, C·p³, X/p, Y/p, Z/p] (every spatial size divisible by p)."""
    _check(x, "patchify")
    p = patch_size
    b, c, *spatial = x.shape
    if any(s % p for s in spatial):
        raise ValueError(f"spatial shape {spatial} not divisible by patch size {p}")
    gx, gy, gz = (s // p for s in spatial)
    x = x.reshape(b, c, gx, p, gy, p, gz, p)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # b, c, px, py, pz, gx, gy, gz
    return x.reshape(b, c * p ** SPATIAL_DIMS, gx, gy, gz)


def unpatchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, C·p³, X, Y, Z] -> [B, C, X·p, Y·p, Z·p] (inverse of ``patchify``)."""
    _check(x, "unpatchify")
    p = patch_size
    b, cp, gx, gy, gz = x.shape
    if cp % p ** SPATIAL_DIMS:
        raise ValueError(f"{cp} channels not divisible by p³ = {p ** SPATIAL_DIMS}")
    c = cp // p ** SPATIAL_DIMS
    x = x.reshape(b, c, p, p, p, gx, gy, gz)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)  # b, c, gx, px, gy, py, gz, pz
    return x.reshape(b, c, gx * p, gy * p, gz * p)


def pixel_shuffle_3d(x: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """[B, C·s³, X, Y, Z] -> [B, C, X·s, Y·s, Z·s] (sub-voxel slot order (dx, dy, dz), dz fastest)."""
    return unpatchify(x, scale_factor)

"""The ``.splat`` format: a compact 3DGS file (32 bytes per Gaussian) read by web splat viewers.

Layout (little endian, no header; the convention of antimatter15/splat's ``convert.py``, also read by
SuperSplat, gsplat.js, Luma's and PlayCanvas's viewers), one record per Gaussian, sorted by
``exp(sum log scale) * opacity`` descending (the viewer's streaming order):

============ ============ ==========================================================================
bytes        type         value
============ ============ ==========================================================================
0-11         3 x float32  position x, y, z (the PLY file frame, ``TRELLIS_PLY_TRANSFORM``)
12-23        3 x float32  scale (standard deviations, ``exp(scale_i)`` of the PLY)
24-27        4 x uint8    colour R, G, B = ``(0.5 + SH_C0 * f_dc) * 255``, A = ``opacity * 255``
28-31        4 x uint8    rotation (w, x, y, z) of the unit quaternion as ``q * 128 + 128``
============ ============ ==========================================================================

Colour, opacity and orientation are quantised to 8 bits: the file is ~7 times smaller than the
PLY (SH degree 0 only, as TRELLIS/SS4D produce).
"""
from __future__ import annotations

import os
from typing import Union

import numpy as np

from trellis_ext.atomic import atomic_file
from trellis_ext.representations.gaussian import SH_C0, TRELLIS_PLY_TRANSFORM, ply_attributes

__all__ = ["SPLAT_DTYPE", "splat_records", "save_splat", "read_splat"]

#: One Gaussian of a ``.splat`` file.
SPLAT_DTYPE = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rotation", "u1", 4)])
#: Colour offset of the SH degree-0 term and the uint8 encoding of quaternions.
SH_DC_OFFSET = 0.5
QUAT_SCALE, QUAT_OFFSET = 128.0, 128.0


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def splat_records(gaussian, transform=TRELLIS_PLY_TRANSFORM) -> np.ndarray:
    """[M] :data:`SPLAT_DTYPE` records of a ``Gaussian``, sorted for streaming (see the module doc)."""
    xyz, f_dc, opacity_logit, log_scale, rot = (a.numpy() for a in ply_attributes(gaussian, transform))
    opacity = 1.0 / (1.0 + np.exp(-opacity_logit[:, 0]))
    order = np.argsort(-np.exp(log_scale.sum(axis=1)) * opacity, kind="stable")
    rec = np.empty(len(xyz), dtype=SPLAT_DTYPE)
    rec["position"] = xyz[order]
    rec["scale"] = np.exp(log_scale[order])
    rgb = (SH_DC_OFFSET + SH_C0 * f_dc[order]) * 255.0
    rec["rgba"] = _to_u8(np.concatenate([rgb, opacity[order, None] * 255.0], axis=1))
    rec["rotation"] = _to_u8(rot[order] * QUAT_SCALE + QUAT_OFFSET)
    return rec


def save_splat(gaussian, path: Union[str, os.PathLike], transform=TRELLIS_PLY_TRANSFORM) -> str:
    """Write ``gaussian`` as a ``.splat`` file (atomically); returns the path."""
    with atomic_file(path, "wb") as f:
        f.write(splat_records(gaussian, transform).tobytes())
    return os.fspath(path)


def read_splat(path: Union[str, os.PathLike]) -> np.ndarray:
    """A ``.splat`` file -> [M] :data:`SPLAT_DTYPE` records (raises ``ValueError`` on a bad size)."""
    data = open(path, "rb").read()
    if len(data) % SPLAT_DTYPE.itemsize:
        raise ValueError(f"{path}: {len(data)} bytes is not a whole number of {SPLAT_DTYPE.itemsize}-byte splats")
    return np.frombuffer(data, dtype=SPLAT_DTYPE)

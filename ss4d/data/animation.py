"""Keyframe sampling and rigid-transform maths for glTF animations (numpy).

Conventions: quaternions are glTF order ``[x, y, z, w]``; 4x4 matrices act on column vectors
(``p' = M @ p``); a node's local matrix is ``T @ R @ S``.
"""
from __future__ import annotations

import numpy as np

INTERP_LINEAR = "LINEAR"
INTERP_STEP = "STEP"
INTERP_CUBIC = "CUBICSPLINE"
CUBIC_VALUES_PER_KEY = 3  # in-tangent, value, out-tangent
QUAT_EPS = 1e-12
SLERP_LINEAR_THRESHOLD = 0.9995  # |cos| above which slerp falls back to normalised lerp


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """Unit quaternions [..., 4]; zero quaternions become identity."""
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    ident = np.zeros_like(q)
    ident[..., 3] = 1.0
    return np.where(n > QUAT_EPS, q / np.maximum(n, QUAT_EPS), ident)


def quat_slerp(q0: np.ndarray, q1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Shortest-path spherical interpolation of unit quaternions [..., 4] with weights t [...]."""
    q0 = quat_normalize(q0)
    q1 = quat_normalize(q1)
    dot = np.sum(q0 * q1, axis=-1)
    q1 = np.where((dot < 0)[..., None], -q1, q1)
    dot = np.abs(dot)
    t = np.asarray(t, dtype=np.float64)[..., None]
    theta = np.arccos(np.clip(dot, -1.0, 1.0))[..., None]
    sin_theta = np.sin(theta)
    near = (dot > SLERP_LINEAR_THRESHOLD)[..., None]
    safe_sin = np.where(near, 1.0, sin_theta)
    w0 = np.where(near, 1.0 - t, np.sin((1.0 - t) * theta) / safe_sin)
    w1 = np.where(near, t, np.sin(t * theta) / safe_sin)
    return quat_normalize(w0 * q0 + w1 * q1)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] from quaternions [..., 4] (xyzw, normalised internally)."""
    x, y, z, w = np.moveaxis(quat_normalize(np.asarray(q, dtype=np.float64)), -1, 0)
    m = np.empty(x.shape + (3, 3), dtype=np.float64)
    m[..., 0, 0] = 1 - 2 * (y * y + z * z)
    m[..., 0, 1] = 2 * (x * y - z * w)
    m[..., 0, 2] = 2 * (x * z + y * w)
    m[..., 1, 0] = 2 * (x * y + z * w)
    m[..., 1, 1] = 1 - 2 * (x * x + z * z)
    m[..., 1, 2] = 2 * (y * z - x * w)
    m[..., 2, 0] = 2 * (x * z - y * w)
    m[..., 2, 1] = 2 * (y * z + x * w)
    m[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return m


def trs_to_matrix(t: np.ndarray, r: np.ndarray, s: np.ndarray) -> np.ndarray:
    """4x4 matrices [..., 4, 4] = T @ R @ S from translation [..., 3], quaternion [..., 4], scale [..., 3]."""
    t = np.asarray(t, np.float64)
    s = np.asarray(s, np.float64)
    rot = quat_to_matrix(r)
    batch = np.broadcast_shapes(t.shape[:-1], rot.shape[:-2], s.shape[:-1])
    m = np.zeros(batch + (4, 4), dtype=np.float64)
    m[..., :3, :3] = rot * s[..., None, :]
    m[..., :3, 3] = t
    m[..., 3, 3] = 1.0
    return m


def sample_keyframes(key_times: np.ndarray, key_values: np.ndarray, interpolation: str,
                     query: np.ndarray, is_rotation: bool = False) -> np.ndarray:
    """Evaluate one animation sampler at query times.

    Args:
        key_times: [K] increasing keyframe times (seconds).
        key_values: [K, D] values, or [3K, D] (in-tangent, value, out-tangent per key) for
            CUBICSPLINE.
        interpolation: ``LINEAR`` (slerp for rotations), ``STEP`` or ``CUBICSPLINE``.
        query: [T] times; values before the first / after the last key are clamped.
        is_rotation: normalise results and use slerp for LINEAR.

    Returns:
        [T, D] float64 values.
    """
    key_times = np.asarray(key_times, np.float64).reshape(-1)
    vals = np.asarray(key_values, np.float64)
    vals = vals.reshape(vals.shape[0], -1)
    query = np.asarray(query, np.float64).reshape(-1)
    interpolation = (interpolation or INTERP_LINEAR).upper()
    n_keys = len(key_times)
    if interpolation == INTERP_CUBIC:
        if vals.shape[0] != CUBIC_VALUES_PER_KEY * n_keys:
            raise ValueError(f"CUBICSPLINE sampler needs {CUBIC_VALUES_PER_KEY * n_keys} outputs, got {vals.shape[0]}")
        in_tan, points, out_tan = vals[0::3], vals[1::3], vals[2::3]
    else:
        if vals.shape[0] != n_keys:
            raise ValueError(f"sampler has {n_keys} inputs but {vals.shape[0]} outputs")
        points = vals
    if n_keys == 0:
        raise ValueError("animation sampler without keyframes")
    if n_keys == 1:
        out = np.repeat(points[:1], len(query), axis=0)
        return quat_normalize(out) if is_rotation else out

    q = np.clip(query, key_times[0], key_times[-1])
    k = np.clip(np.searchsorted(key_times, q, side="right") - 1, 0, n_keys - 2)
    t0, t1 = key_times[k], key_times[k + 1]
    dt = np.maximum(t1 - t0, 1e-12)
    s = np.clip((q - t0) / dt, 0.0, 1.0)

    if interpolation == INTERP_STEP:
        out = np.where((s >= 1.0)[:, None], points[k + 1], points[k])
    elif interpolation == INTERP_CUBIC:
        s2, s3 = s * s, s * s * s
        h00 = 2 * s3 - 3 * s2 + 1
        h10 = s3 - 2 * s2 + s
        h01 = -2 * s3 + 3 * s2
        h11 = s3 - s2
        out = (h00[:, None] * points[k] + (h10 * dt)[:, None] * out_tan[k]
               + h01[:, None] * points[k + 1] + (h11 * dt)[:, None] * in_tan[k + 1])
    elif interpolation == INTERP_LINEAR:
        if is_rotation:
            out = quat_slerp(points[k], points[k + 1], s)
        else:
            out = points[k] + s[:, None] * (points[k + 1] - points[k])
    else:
        raise ValueError(f"unknown interpolation {interpolation!r}")
    return quat_normalize(out) if is_rotation else out

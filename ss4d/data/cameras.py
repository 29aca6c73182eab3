"""Cameras for data rendering: Hammersley orbit views, conditioning cameras, transforms.json.

World frame Z-up. A view at (yaw, pitch, radius) sits at
``radius * (cos(yaw) cos(pitch), sin(yaw) cos(pitch), sin(pitch))`` looking at the origin with
+Z as the up hint (the TRELLIS/Blender data-camera convention).

Two camera-to-world conventions appear:

* **Blender** (stored in ``transforms.json``, as TRELLIS/NeRF do): the camera looks along its
  local -Z, +Y is up, +X right.
* **OpenCV** (used for projection here): looks along +Z, +Y down, +X right. Converting between
  the two negates the Y and Z columns of the 3x3 rotation (:func:`blender_to_opencv`).

Intrinsics are pinhole, square pixels, principal point at the image centre; ``camera_angle_x``
is the horizontal field of view in radians. Pixel (row i, col j) has its centre at
``(x, y) = (j + 0.5, i + 0.5)``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_RADIUS = 2.0
DEFAULT_FOV_DEG = 40.0
UPPER_HEMISPHERE_FRACTION = 0.75  # share of orbit views above the horizon (TRELLIS-like remap)
WORLD_UP = np.array([0.0, 0.0, 1.0])
COND_FRONT_YAW_DEG = -90.0  # glTF front (+Z) maps to -Y in the Z-up world
COND_FRONT_PITCH_DEG = 10.0
COND_RANDOM_PITCH_RANGE_DEG = (-10.0, 40.0)
UNIT_CUBE_BOUNDING_RADIUS = math.sqrt(3.0) / 2.0
LOOKAT_DEGENERATE_EPS = 1e-9
TRANSFORMS_FILE = "transforms.json"


@dataclass
class BlenderCamera:
    """A camera as the dataset stores it (``transforms.json``): ``c2w_blender`` [4, 4] camera-to-world in
    Blender axes, ``fov_x`` horizontal field of view in radians, image size in pixels.

    The project has one rendering camera, :class:`trellis_ext.renderers.Camera`; :meth:`to_camera`
    converts into it (what the trainers' and the evaluation's renders of Gaussians use)."""

    c2w_blender: np.ndarray
    fov_x: float
    width: int
    height: int

    @property
    def c2w_opencv(self) -> np.ndarray:
        return blender_to_opencv(self.c2w_blender)

    @property
    def w2c_opencv(self) -> np.ndarray:
        return np.linalg.inv(self.c2w_opencv)

    @property
    def position(self) -> np.ndarray:
        return self.c2w_blender[:3, 3].copy()

    def intrinsics(self) -> np.ndarray:
        """[3, 3] pixel intrinsics (fx = fy from the horizontal fov)."""
        f = 0.5 * self.width / math.tan(self.fov_x / 2.0)
        return np.array([[f, 0.0, self.width / 2.0], [0.0, f, self.height / 2.0], [0.0, 0.0, 1.0]])

    def to_camera(self):
        """The same camera as the renderer's :class:`trellis_ext.renderers.Camera` (float32)."""
        from trellis_ext.renderers.camera import camera_from_blender_c2w

        return camera_from_blender_c2w(self.c2w_blender, self.fov_x, self.width, self.height)

    def resized(self, width: int, height: int) -> "BlenderCamera":
        return BlenderCamera(self.c2w_blender.copy(), self.fov_x, width, height)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points [N, 3] -> (pixel xy [N, 2], camera depth z [N]) with OpenCV conventions."""
        w2c = self.w2c_opencv
        cam = points @ w2c[:3, :3].T + w2c[:3, 3]
        z = cam[:, 2]
        k = self.intrinsics()
        safe = np.where(np.abs(z) > LOOKAT_DEGENERATE_EPS, z, LOOKAT_DEGENERATE_EPS)
        xy = np.stack([k[0, 0] * cam[:, 0] / safe + k[0, 2], k[1, 1] * cam[:, 1] / safe + k[1, 2]], 1)
        return xy, z


def blender_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world Blender axes -> OpenCV axes (negate the Y and Z camera axes)."""
    out = np.array(c2w, dtype=np.float64, copy=True)
    out[:3, 1:3] *= -1.0
    return out


def radical_inverse_base2(i: np.ndarray) -> np.ndarray:
    """Van der Corput radical inverse in base 2 of non-negative integers [N] -> [0, 1)."""
    i = np.asarray(i, dtype=np.uint64)
    out = np.zeros(i.shape, dtype=np.float64)
    scale = 0.5
    while np.any(i):
        out += (i & np.uint64(1)).astype(np.float64) * scale
        i = i >> np.uint64(1)
        scale *= 0.5
    return out


def hammersley_sphere(n: int, offset: tuple[float, float] = (0.0, 0.0),
                      upper_fraction: float = UPPER_HEMISPHERE_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """``n`` well-spread directions as (yaw [n], pitch [n]) in radians.

    The 2D Hammersley set ``(k / n, radical_inverse(k))``, shifted by ``offset`` (mod 1), is mapped
    area-uniformly onto the sphere (``sin(pitch)`` linear in the first coordinate), except that
    ``upper_fraction`` of the first coordinate's range is given to the upper hemisphere.
    """
    if n < 1:
        raise ValueError(f"number of views must be >= 1, got {n}")
    if not 0.0 < upper_fraction < 1.0:
        raise ValueError(f"upper_fraction must be in (0, 1), got {upper_fraction}")
    k = np.arange(n)
    u = np.mod(k / n + offset[0], 1.0)
    v = np.mod(radical_inverse_base2(k) + offset[1], 1.0)
    lower = 1.0 - upper_fraction
    z = np.where(u < lower, u / lower - 1.0, (u - lower) / upper_fraction)
    pitch = np.arcsin(np.clip(z, -1.0, 1.0))
    yaw = 2.0 * np.pi * v
    return yaw, pitch


def look_at_blender(position: np.ndarray, target: np.ndarray = np.zeros(3), up: np.ndarray = WORLD_UP) -> np.ndarray:
    """Blender-convention camera-to-world [4, 4] for a camera at ``position`` looking at ``target``."""
    position = np.asarray(position, np.float64)
    back = position - np.asarray(target, np.float64)  # camera +Z points away from the target
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    if np.linalg.norm(right) < LOOKAT_DEGENERATE_EPS:  # looking straight up/down
        right = np.cross(np.array([0.0, 1.0, 0.0]), back)
    right /= np.linalg.norm(right)
    cam_up = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, cam_up, back, position
    return c2w


def orbit_position(yaw: float, pitch: float, radius: float) -> np.ndarray:
    return radius * np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), math.sin(pitch)])


def orbit_views(num_views: int, resolution: int, radius: float = DEFAULT_RADIUS, fov_deg: float = DEFAULT_FOV_DEG,
                seed: int | None = 0) -> list[BlenderCamera]:
    """``num_views`` cameras on a Hammersley sphere (random offset from ``seed``; None = no offset)."""
    offset = (0.0, 0.0) if seed is None else tuple(np.random.default_rng(seed).random(2))
    yaw, pitch = hammersley_sphere(num_views, offset)
    fov = math.radians(fov_deg)
    return [BlenderCamera(look_at_blender(orbit_position(y, p, radius)), fov, resolution, resolution)
            for y, p in zip(yaw, pitch)]


def conditioning_camera(mode: str, resolution: int, radius: float = DEFAULT_RADIUS, fov_deg: float = DEFAULT_FOV_DEG,
                        seed: int = 0) -> BlenderCamera:
    """The fixed camera of a clip's conditioning video.

    ``front``: in front of the asset (glTF +Z = world -Y), slightly above; ``random``: yaw uniform,
    pitch uniform in :data:`COND_RANDOM_PITCH_RANGE_DEG` (seeded).
    """
    if mode == "front":
        yaw, pitch = math.radians(COND_FRONT_YAW_DEG), math.radians(COND_FRONT_PITCH_DEG)
    elif mode == "random":
        rng = np.random.default_rng(seed)
        yaw = rng.uniform(0.0, 2.0 * math.pi)
        pitch = math.radians(rng.uniform(*COND_RANDOM_PITCH_RANGE_DEG))
    else:
        raise ValueError(f"conditioning camera mode must be 'front' or 'random', got {mode!r}")
    return BlenderCamera(look_at_blender(orbit_position(yaw, pitch, radius)), math.radians(fov_deg), resolution,
                         resolution)


def write_transforms(path: str | Path, cameras: list[BlenderCamera], file_paths: list[str], extra: dict | None = None,
                     depth_file: str | None = None) -> None:
    """Write a NeRF/TRELLIS-style ``transforms.json``.

    Per view: ``file_path``, ``camera_angle_x`` (rad), ``transform_matrix`` (Blender c2w [4][4]),
    plus ``w``, ``h``. Top level: ``camera_convention`` = "blender_c2w", optional ``depth_file``
    (an .npz with ``depth`` [N, H, W]) and any ``extra`` keys (time, frame index, normalisation).
    """
    frames = [{"file_path": fp, "camera_angle_x": float(c.fov_x), "w": int(c.width), "h": int(c.height),
               "transform_matrix": np.asarray(c.c2w_blender, float).tolist()}
              for c, fp in zip(cameras, file_paths)]
    data = {"camera_convention": "blender_c2w", "frames": frames}
    if depth_file:
        data["depth_file"] = depth_file
    data.update(extra or {})
    Path(path).write_text(json.dumps(data, indent=1))


def read_transforms(path: str | Path) -> tuple[list[BlenderCamera], list[str], dict]:
    """Inverse of :func:`write_transforms`: (cameras, file paths, the whole JSON)."""
    data = json.loads(Path(path).read_text())
    cams, files = cameras_from_transforms(data)
    return cams, files, data


def cameras_from_transforms(data: dict) -> tuple[list[BlenderCamera], list[str]]:
    """(cameras, file paths) of a parsed ``transforms.json``."""
    cams, files = [], []
    for fr in data["frames"]:
        cams.append(BlenderCamera(np.asarray(fr["transform_matrix"], np.float64), float(fr["camera_angle_x"]),
                           int(fr.get("w", 0)), int(fr.get("h", 0))))
        files.append(fr["file_path"])
    return cams, files

"""Pinhole cameras in TRELLIS's conventions.

* **Extrinsics**: 4x4 OpenCV world-to-camera matrix ``[R | t]``: camera x right, y down, z
  forward (into the scene); a world point p has camera coordinates ``R p + t``.
* **Intrinsics**: 3x3 *normalised* matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in units of
  the image size (fx = focal / width, cx = 0.5 for a centred principal point), as TRELLIS and
  utils3d use. :meth:`Camera.pixel_intrinsics` gives the pixel-unit matrix.
* **Pixels**: continuous image coordinates ``u = fx*W * x/z + cx*W``, ``v = fy*H * y/z + cy*H``
  with pixel (i, j) covering ``[i, i+1) x [j, j+1)`` and its centre at ``(i + 0.5, j + 0.5)``
  (the same pixel grid as TRELLIS's mip-splatting rasteriser and gsplat).
* **World**: TRELLIS's object frame, **Z-up**. The orbit camera of ``render_utils`` sits at
  ``r * (sin(yaw) cos(pitch), cos(yaw) cos(pitch), sin(pitch))``, looks at the origin, up +Z.
* **Units**: yaw / pitch in radians (as TRELLIS's ``render_video``), fields of view in
  **degrees** (argument names end in ``_deg``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple, Union

import torch

__all__ = [
    "Camera",
    "look_at_extrinsics",
    "intrinsics_from_fov",
    "orbit_camera",
    "orbit_trajectory",
    "camera_from_blender_c2w",
    "project_points",
    "DEFAULT_FOV_DEG",
    "DEFAULT_RADIUS",
    "DEFAULT_RESOLUTION",
    "WORLD_UP",
]

#: TRELLIS ``render_video`` / ``render_multiview`` defaults.
DEFAULT_FOV_DEG = 40.0
DEFAULT_RADIUS = 2.0
DEFAULT_RESOLUTION = 512
#: Mean pitch and pitch amplitude (radians) of TRELLIS's ``render_video`` orbit.
VIDEO_PITCH_MEAN = 0.25
VIDEO_PITCH_AMPLITUDE = 0.5
#: TRELLIS's ``render_video`` sweeps yaw with ``linspace(0, 2 * 3.1415, n)`` (endpoint
#: included, truncated pi); reproduced when ``match_trellis=True``.
TRELLIS_TWO_PI = 2 * 3.1415
#: World up axis (TRELLIS objects are Z-up).
WORLD_UP = (0.0, 0.0, 1.0)


@dataclass
class Camera:
    """One pinhole camera.

    Attributes:
        extrinsics: [4, 4] OpenCV world-to-camera matrix.
        intrinsics: [3, 3] normalised intrinsics (fx, fy, cx, cy in units of width / height).
        width: image width in pixels.
        height: image height in pixels.
    """

    extrinsics: torch.Tensor
    intrinsics: torch.Tensor
    width: int
    height: int

    def __post_init__(self):
        self.extrinsics = torch.as_tensor(self.extrinsics)
        self.intrinsics = torch.as_tensor(self.intrinsics)
        if self.extrinsics.shape != (4, 4):
            raise ValueError(f"extrinsics must be [4, 4], got {tuple(self.extrinsics.shape)}")
        if self.intrinsics.shape != (3, 3):
            raise ValueError(f"intrinsics must be [3, 3], got {tuple(self.intrinsics.shape)}")
        self.width, self.height = int(self.width), int(self.height)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    def pixel_intrinsics(self) -> torch.Tensor:
        """[3, 3] intrinsics in pixels: first row scaled by width, second by height."""
        scale = torch.tensor([self.width, self.height, 1.0], dtype=self.intrinsics.dtype,
                             device=self.intrinsics.device)
        return self.intrinsics * scale[:, None]

    @property
    def center(self) -> torch.Tensor:
        """[3] camera centre in world coordinates (-R^T t)."""
        rot, trans = self.extrinsics[:3, :3], self.extrinsics[:3, 3]
        return -rot.T @ trans

    @property
    def fov_x_deg(self) -> float:
        return math.degrees(2 * math.atan(0.5 / float(self.intrinsics[0, 0])))

    @property
    def fov_y_deg(self) -> float:
        return math.degrees(2 * math.atan(0.5 / float(self.intrinsics[1, 1])))

    def to(self, device=None, dtype=None) -> "Camera":
        """A copy with both matrices moved / cast."""
        return Camera(self.extrinsics.to(device=device, dtype=dtype),
                      self.intrinsics.to(device=device, dtype=dtype), self.width, self.height)


def camera_from_blender_c2w(c2w_blender, fov_x_rad: float, width: int, height: int) -> Camera:
    """A :class:`Camera` from a Blender/NeRF camera-to-world matrix (``transforms.json``'s
    ``transform_matrix``: camera looks along its -Z, +Y up) and the horizontal field of view in radians
    (``camera_angle_x``). Square pixels, principal point at the image centre, float32.

    OpenCV c2w = Blender c2w with the camera's Y and Z axes negated; extrinsics = its inverse.
    """
    c2w = torch.as_tensor(c2w_blender, dtype=torch.float64).clone()
    if c2w.shape != (4, 4):
        raise ValueError(f"c2w must be [4, 4], got {tuple(c2w.shape)}")
    c2w[:3, 1:3] *= -1.0
    focal_px = 0.5 * width / math.tan(0.5 * fov_x_rad)
    intrinsics = torch.tensor([[focal_px / width, 0.0, 0.5], [0.0, focal_px / height, 0.5], [0.0, 0.0, 1.0]],
                              dtype=torch.float64)
    return Camera(torch.linalg.inv(c2w).float(), intrinsics.float(), width, height)


def look_at_extrinsics(
    eye: Union[Sequence[float], torch.Tensor],
    target: Union[Sequence[float], torch.Tensor] = (0.0, 0.0, 0.0),
    up: Union[Sequence[float], torch.Tensor] = WORLD_UP,
) -> torch.Tensor:
    """[4, 4] OpenCV world-to-camera matrix of a camera at ``eye`` looking at ``target``.

    Camera axes in world coordinates: z = normalize(target - eye) (forward),
    x = normalize(z cross up) (right), y = z cross x (down in the image). ``up`` must not be
    parallel to the viewing direction. float32 unless ``eye`` is a tensor of another dtype.
    """
    eye_t = torch.as_tensor(eye, dtype=eye.dtype if torch.is_tensor(eye) else torch.float32)
    target_t = torch.as_tensor(target, dtype=eye_t.dtype, device=eye_t.device)
    up_t = torch.as_tensor(up, dtype=eye_t.dtype, device=eye_t.device)
    forward = target_t - eye_t
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, up_t)
    if float(right.norm()) < 1e-8:
        raise ValueError("up is parallel to the viewing direction; choose another up vector")
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    rot = torch.stack([right, down, forward], dim=0)
    extr = torch.eye(4, dtype=eye_t.dtype, device=eye_t.device)
    extr[:3, :3] = rot
    extr[:3, 3] = -rot @ eye_t
    return extr


def intrinsics_from_fov(fov_x_deg: float, fov_y_deg: Union[float, None] = None) -> torch.Tensor:
    """[3, 3] normalised intrinsics for full fields of view in degrees (fov_y defaults to fov_x).

    fx = 0.5 / tan(fov_x / 2), fy likewise, principal point (0.5, 0.5).
    """
    if fov_y_deg is None:
        fov_y_deg = fov_x_deg
    fx = 0.5 / math.tan(math.radians(fov_x_deg) / 2)
    fy = 0.5 / math.tan(math.radians(fov_y_deg) / 2)
    return torch.tensor([[fx, 0.0, 0.5], [0.0, fy, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float32)


def orbit_camera(
    yaw: float,
    pitch: float,
    radius: float = DEFAULT_RADIUS,
    fov_deg: float = DEFAULT_FOV_DEG,
    resolution: Union[int, Tuple[int, int]] = DEFAULT_RESOLUTION,
) -> Camera:
    """TRELLIS's orbit camera (``yaw_pitch_r_fov_to_extrinsics_intrinsics``).

    Args:
        yaw, pitch: radians. Camera centre ``radius * (sin yaw cos pitch, cos yaw cos pitch,
            sin pitch)``; yaw = pitch = 0 looks from +Y towards the origin (world +X appears on
            the image's left, +Z up).
        radius: distance to the origin.
        fov_deg: full field of view in degrees (both axes).
        resolution: image size, an int (square) or (width, height).
    """
    width, height = (resolution, resolution) if isinstance(resolution, int) else resolution
    eye = radius * torch.tensor([
        math.sin(yaw) * math.cos(pitch),
        math.cos(yaw) * math.cos(pitch),
        math.sin(pitch),
    ], dtype=torch.float32)
    return Camera(look_at_extrinsics(eye), intrinsics_from_fov(fov_deg), width, height)


def orbit_trajectory(
    num_frames: int,
    radius: float = DEFAULT_RADIUS,
    fov_deg: float = DEFAULT_FOV_DEG,
    resolution: Union[int, Tuple[int, int]] = DEFAULT_RESOLUTION,
    match_trellis: bool = False,
) -> List[Camera]:
    """Cameras of TRELLIS's ``render_video`` turntable.

    Frame k of n: yaw = 2 pi k / n, pitch = 0.25 + 0.5 sin(2 pi k / n) (radians), so the video
    loops seamlessly. ``match_trellis=True`` reproduces TRELLIS exactly instead:
    ``linspace(0, 2 * 3.1415, n)`` for both angles (first and last frames nearly coincide).
    """
    if num_frames <= 0:
        raise ValueError("num_frames must be positive")
    if match_trellis:
        angles = torch.linspace(0, TRELLIS_TWO_PI, num_frames).tolist()
    else:
        angles = [2 * math.pi * k / num_frames for k in range(num_frames)]
    return [
        orbit_camera(a, VIDEO_PITCH_MEAN + VIDEO_PITCH_AMPLITUDE * math.sin(a), radius, fov_deg, resolution)
        for a in angles
    ]


def project_points(points: torch.Tensor, camera: Camera) -> Tuple[torch.Tensor, torch.Tensor]:
    """Project world points to continuous pixel coordinates.

    Args:
        points: [N, 3] world coordinates.
    Returns:
        ``(uv [N, 2], depth [N])``: pixel coordinates (pixel i's centre at i + 0.5) and camera
        z (distance along the optical axis; points behind the camera have depth <= 0 and
        meaningless uv).
    """
    extr = camera.extrinsics.to(points)
    k_pix = camera.pixel_intrinsics().to(points)
    cam = points @ extr[:3, :3].T + extr[:3, 3]
    z = cam[:, 2]
    uv = torch.stack([
        k_pix[0, 0] * cam[:, 0] / z + k_pix[0, 2],
        k_pix[1, 1] * cam[:, 1] / z + k_pix[1, 2],
    ], dim=-1)
    return uv, z

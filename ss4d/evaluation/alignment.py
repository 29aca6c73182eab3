"""Where a generated 4D object sits relative to a dataset sample's ground-truth cameras.

The model frame: SS4D (like TRELLIS) generates every frame in the normalised cube [-0.5, 0.5]³,
Z-up, the frame of the data toolkit's voxels and cameras (``ss4d/data/cameras.py``). The input
video is assumed to be seen from the toolkit's fixed conditioning camera
(:func:`ss4d.data.cameras.conditioning_camera` ``("front")``: yaw -90°, pitch 10°, radius 2): the
object appears in the model frame as the reference camera would see it.

The alignment ``T`` (model frame -> ground-truth world) is the rotation about the origin that
carries the reference camera onto the sample's actual conditioning camera
(``cond/transforms.json``): ``T = R_cond R_ref^T``. Rendering the generated Gaussians at a
ground-truth camera with camera-to-world ``C`` is rendering them at ``T^-1 C`` in the model frame
(:func:`aligned_camera`). For samples rendered with the toolkit's ``front`` conditioning camera
``T`` is the identity, exactly (the test checks it). Scale is not estimated: both frames normalise
the clip's union bounding box to a largest side of 1 (``ss4d.data.mesh.normalize_clip``).

``mode="canonical"`` skips the rotation (``T = I``) for models trained to generate in the
dataset's canonical orientation whatever the input view.
"""
from __future__ import annotations

import math

import numpy as np

from ..data.cameras import BlenderCamera, conditioning_camera

__all__ = ["ALIGNMENTS", "ROTATION_ATOL", "reference_camera", "input_alignment", "aligned_camera",
           "transform_points"]

ALIGNMENTS = ("input-view", "canonical")
ROTATION_ATOL = 1e-9  # a rotation this close to the identity is the identity (JSON round-off)


def reference_camera(like: BlenderCamera) -> BlenderCamera:
    """The toolkit's fixed (``front``) conditioning camera at ``like``'s distance, field of view and size."""
    radius = float(np.linalg.norm(like.position))
    return conditioning_camera("front", like.width or 1, radius=radius, fov_deg=math.degrees(like.fov_x))


def input_alignment(cond_camera: BlenderCamera, mode: str = "input-view") -> np.ndarray:
    """``T`` [4, 4] float64: model frame -> ground-truth world (see the module docstring)."""
    if mode not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {mode!r}")
    t = np.eye(4)
    if mode == "canonical":
        return t
    ref = reference_camera(cond_camera)
    rot = np.asarray(cond_camera.c2w_blender, np.float64)[:3, :3] @ ref.c2w_blender[:3, :3].T
    if not np.allclose(rot, np.eye(3), atol=ROTATION_ATOL):
        t[:3, :3] = rot
    return t


def aligned_camera(camera: BlenderCamera, alignment: np.ndarray) -> BlenderCamera:
    """The ground-truth ``camera`` expressed in the model frame (c2w ``T^-1 C``), same intrinsics and size."""
    c2w = np.linalg.inv(alignment) @ np.asarray(camera.c2w_blender, np.float64)
    return BlenderCamera(c2w, camera.fov_x, camera.width, camera.height)


def transform_points(points: np.ndarray, alignment: np.ndarray) -> np.ndarray:
    """Points [N, 3] in the model frame -> ground-truth world (``T p``)."""
    p = np.asarray(points, np.float64)
    return p @ alignment[:3, :3].T + alignment[:3, 3]

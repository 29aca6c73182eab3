"""TRELLIS-compatible 3D Gaussian representation, its decoder head and 3DGS PLY I/O.

Storage conventions (identical to TRELLIS's ``Gaussian``):

* Raw attributes are stored *before* activation, exactly as the Gaussian decoder writes them
  (the decoder has already multiplied each block by its learning-rate factor ``lr``):

  ============== ========== ====================================================================
  attribute      shape      activation (the ``get_*`` property)
  ============== ========== ====================================================================
  ``_xyz``       [M, 3]     ``get_xyz = _xyz * aabb_size + aabb_origin`` (world units)
  ``_features_dc`` [M, 1, 3] ``get_features = _features_dc`` (SH degree 0 coefficient)
  ``_scaling``   [M, 3]     ``s = act(_scaling + act^-1(scaling_bias))``;
                            ``get_scaling = sqrt(s^2 + mininum_kernel_size^2)`` (3D filter)
  ``_rotation``  [M, 4]     ``get_rotation = normalize(_rotation + [1, 0, 0, 0])`` (w, x, y, z)
  ``_opacity``   [M, 1]     ``get_opacity = sigmoid(_opacity + logit(opacity_bias))``
  ============== ========== ====================================================================

  ``act`` is softplus (default, the official decoder) or exp. ``mininum_kernel_size`` keeps
  TRELLIS's spelling on purpose, so code written against TRELLIS keeps working.

* World frame: TRELLIS's object frame, **Z-up**, object inside the unit cube centred at the origin
  (``aabb = [-0.5, -0.5, -0.5, 1, 1, 1]`` = origin then size).

* PLY files use the standard 3DGS layout (see :data:`PLY_PROPERTY_NAMES`), rotated by default
  exactly like TRELLIS's ``save_ply`` (:data:`TRELLIS_PLY_TRANSFORM`), and hold *activated*
  values: world xyz, ``opacity = logit(get_opacity)``, ``scale_i = log(get_scaling)``, the unit
  quaternion ``rot_0..3 = get_rotation`` (w, x, y, z), ``f_dc_0..2 = get_features``.

Unlike TRELLIS, nothing here requires CUDA: every tensor lives on ``device`` (default CPU).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import atomic_file

__all__ = [
    "Gaussian",
    "gaussians_from_voxel_output",
    "compute_offset_perturbation",
    "hammersley_sequence",
    "radical_inverse",
    "voxel_output_layout",
    "save_ply",
    "load_ply",
    "ply_attributes",
    "PlyFormatError",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "inverse_sigmoid",
    "inverse_softplus",
    "DEFAULT_AABB",
    "TRELLIS_PLY_TRANSFORM",
    "PLY_PROPERTY_NAMES",
    "SH_C0",
]

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

#: TRELLIS's object box: origin (-0.5, -0.5, -0.5) and size (1, 1, 1).
DEFAULT_AABB = (-0.5, -0.5, -0.5, 1.0, 1.0, 1.0)
#: Defaults of the official ``slat_dec_gs`` representation config (TRELLIS's *class* defaults
#: differ: 0.0 / 0.01 / 0.1 / "exp"; every TRELLIS call site passes the values explicitly).
DEFAULT_MIN_KERNEL_SIZE = 9e-4        # "3d_filter_kernel_size"
DEFAULT_SCALING_BIAS = 4e-3
DEFAULT_OPACITY_BIAS = 0.1
DEFAULT_SCALING_ACTIVATION = "softplus"
SCALING_ACTIVATIONS = ("softplus", "exp")
#: Identity quaternion (w, x, y, z) added to the raw rotation before normalisation.
ROTATION_BIAS = (1.0, 0.0, 0.0, 0.0)
#: Zeroth-order real spherical-harmonic basis constant 1 / (2 sqrt(pi)).
SH_C0 = 0.28209479177387814

#: TRELLIS's default ``save_ply`` / ``load_ply`` ``transform`` (TRELLIS calls it z-up -> y-up):
#: positions are written as ``x' = T x`` = (x, -z, y), a +90 degree rotation about X. The
#: object's up (+Z) becomes **-Y** in the file, i.e. the Y-down (OpenCV / COLMAP) frame that
#: 3DGS scenes trained from COLMAP use and splat viewers expect.
TRELLIS_PLY_TRANSFORM = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0))
#: Per-vertex properties of a 3DGS PLY with SH degree 0, in file order (all float32).
PLY_PROPERTY_NAMES = (
    "x", "y", "z", "nx", "ny", "nz",
    "f_dc_0", "f_dc_1", "f_dc_2",
    "opacity",
    "scale_0", "scale_1", "scale_2",
    "rot_0", "rot_1", "rot_2", "rot_3",
)
PLY_ELEMENT = "vertex"
#: Smallest pre-filter scale used when inverting the 3D filter (scales at or below the filter
#: size map to this instead of log(0) = -inf).
MIN_PREFILTER_SCALE = 1e-12
#: Tolerance for accepting a PLY ``transform`` as a proper rotation.
ROTATION_MATRIX_ATOL = 1e-5

#: Default channel order of the decoder head and the number of components per Gaussian.
VOXEL_OUTPUT_BLOCKS = (("_xyz", 3), ("_features_dc", 3), ("_scaling", 3), ("_rotation", 4), ("_opacity", 1))
#: Decoder output channels per Gaussian (14).
CHANNELS_PER_GAUSSIAN = sum(k for _, k in VOXEL_OUTPUT_BLOCKS)
#: The raw attributes a decoder / PLY sets (``_features_rest`` stays None: SH degree 0).
RAW_ATTRIBUTES = tuple(name for name, _ in VOXEL_OUTPUT_BLOCKS)
#: Official representation config of TRELLIS's ``slat_dec_gs`` (used when keys are missing).
DEFAULT_REPRESENTATION_CONFIG = {
    "lr": {"_xyz": 1.0, "_features_dc": 1.0, "_opacity": 1.0, "_scaling": 1.0, "_rotation": 0.1},
    "perturb_offset": True,
    "voxel_size": 1.5,
    "num_gaussians": 32,
    "2d_filter_kernel_size": 0.1,
    "3d_filter_kernel_size": DEFAULT_MIN_KERNEL_SIZE,
    "scaling_bias": DEFAULT_SCALING_BIAS,
    "opacity_bias": DEFAULT_OPACITY_BIAS,
    "scaling_activation": DEFAULT_SCALING_ACTIVATION,
}
#: First primes: bases of the radical inverse for Hammersley dimensions 1, 2, ...
_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53)


# --------------------------------------------------------------------------------------------
# Small math helpers
# --------------------------------------------------------------------------------------------

def inverse_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """logit(x) = log(x / (1 - x)), elementwise."""
    return torch.log(x / (1 - x))


def inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    """softplus^-1(x) = x + log(-expm1(-x)) for x > 0, elementwise (stable form)."""
    return x + torch.log(-torch.expm1(-x))


def _activation(kind: str):
    if kind == "softplus":
        return F.softplus, inverse_softplus
    if kind == "exp":
        return torch.exp, torch.log
    raise ValueError(f"scaling_activation must be one of {SCALING_ACTIVATIONS}, got {kind!r}")


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from quaternions.

    Args:
        q: [..., 4] quaternions (w, x, y, z); normalised here (need not be unit on input).
    Returns:
        [..., 3, 3] rotation matrices R such that a vector v rotates to R @ v.
    """
    q = F.normalize(q, dim=-1)
    w, x, y, z = q.unbind(-1)
    rows = (
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    )
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def matrix_to_quaternion(m: torch.Tensor) -> torch.Tensor:
    """Unit quaternions (w, x, y, z) with w >= 0 from rotation matrices [..., 3, 3].

    Uses the numerically best of the four algebraically equivalent extractions per matrix
    (the one dividing by the largest of 4w^2, 4x^2, 4y^2, 4z^2).
    """
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4 * (w^2, x^2, y^2, z^2) from the diagonal.
    four_sq = torch.stack([
        1 + m00 + m11 + m22,
        1 + m00 - m11 - m22,
        1 - m00 + m11 - m22,
        1 - m00 - m11 + m22,
    ], dim=-1).clamp_min(0)
    # Candidate i: component i is sqrt(four_sq[i]) / 2, the others follow from off-diagonals.
    cand = torch.stack([
        torch.stack([four_sq[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, four_sq[..., 1], m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, four_sq[..., 2], m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, four_sq[..., 3]], dim=-1),
    ], dim=-2)  # [..., 4 candidates, 4 components], each = 2 * q_i * q
    best = four_sq.argmax(dim=-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


# --------------------------------------------------------------------------------------------
# Gaussian
# --------------------------------------------------------------------------------------------

class Gaussian:
    """A set of M 3D Gaussians with TRELLIS's raw storage and activations (SH degree 0).

    Args:
        aabb: object box as (origin_x, origin_y, origin_z, size_x, size_y, size_z);
            ``get_xyz = _xyz * size + origin``.
        sh_degree: must be 0 (TRELLIS never uses higher degrees for its Gaussians).
        mininum_kernel_size: 3D filter size (world units) added in quadrature to every scale.
        scaling_bias: activated scale at a raw value of 0 (before the 3D filter).
        opacity_bias: activated opacity at a raw value of 0.
        scaling_activation: ``"softplus"`` or ``"exp"``.
        device: where new tensors (aabb, loaded attributes) are created; default CPU.

    Raw attributes (``None`` until set): ``_xyz [M,3]``, ``_features_dc [M,1,3]``,
    ``_scaling [M,3]``, ``_rotation [M,4]``, ``_opacity [M,1]``; ``_features_rest`` stays None.
    """

    def __init__(
        self,
        aabb: Sequence[float] = DEFAULT_AABB,
        sh_degree: int = 0,
        mininum_kernel_size: float = DEFAULT_MIN_KERNEL_SIZE,
        scaling_bias: float = DEFAULT_SCALING_BIAS,
        opacity_bias: float = DEFAULT_OPACITY_BIAS,
        scaling_activation: str = DEFAULT_SCALING_ACTIVATION,
        device: Union[str, torch.device] = "cpu",
    ):
        if sh_degree != 0:
            raise NotImplementedError(f"only sh_degree=0 is supported (TRELLIS's setting), got {sh_degree}")
        aabb = [float(v) for v in (aabb.tolist() if torch.is_tensor(aabb) else aabb)]
        if len(aabb) != 6:
            raise ValueError(f"aabb must have 6 values (origin xyz, size xyz), got {len(aabb)}")
        _activation(scaling_activation)  # validate early
        self.init_params = {
            "aabb": aabb,
            "sh_degree": sh_degree,
            "mininum_kernel_size": mininum_kernel_size,
            "scaling_bias": scaling_bias,
            "opacity_bias": opacity_bias,
            "scaling_activation": scaling_activation,
        }
        self.sh_degree = sh_degree
        self.active_sh_degree = sh_degree
        self.mininum_kernel_size = float(mininum_kernel_size)
        self.scaling_bias = float(scaling_bias)
        self.opacity_bias = float(opacity_bias)
        self.scaling_activation_type = scaling_activation
        self.device = torch.device(device)
        self.aabb = torch.tensor(aabb, dtype=torch.float32, device=self.device)
        self._xyz: Optional[torch.Tensor] = None
        self._features_dc: Optional[torch.Tensor] = None
        self._features_rest: Optional[torch.Tensor] = None
        self._scaling: Optional[torch.Tensor] = None
        self._rotation: Optional[torch.Tensor] = None
        self._opacity: Optional[torch.Tensor] = None

    # ---- biases (computed in float32 like TRELLIS, then cast to the attribute's dtype) ----
    def _scale_bias(self, like: torch.Tensor) -> torch.Tensor:
        _, inverse = _activation(self.scaling_activation_type)
        return inverse(torch.tensor(self.scaling_bias, dtype=torch.float32)).to(like)

    def _opacity_bias(self, like: torch.Tensor) -> torch.Tensor:
        return inverse_sigmoid(torch.tensor(self.opacity_bias, dtype=torch.float32)).to(like)

    @staticmethod
    def _rotation_bias(like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(ROTATION_BIAS, dtype=like.dtype, device=like.device)

    # ---- activated views ----
    @property
    def get_xyz(self) -> torch.Tensor:
        """[M, 3] world positions."""
        aabb = self.aabb.to(self._xyz)
        return self._xyz * aabb[None, 3:] + aabb[None, :3]

    @property
    def get_features(self) -> torch.Tensor:
        """[M, 1, 3] SH degree-0 coefficients (RGB = SH_C0 * f + 0.5 in the renderer)."""
        return self._features_dc

    @property
    def get_scaling(self) -> torch.Tensor:
        """[M, 3] per-axis standard deviations in world units, 3D filter included."""
        act, _ = _activation(self.scaling_activation_type)
        scales = act(self._scaling + self._scale_bias(self._scaling))
        return torch.sqrt(torch.square(scales) + self.mininum_kernel_size ** 2)

    @property
    def get_rotation(self) -> torch.Tensor:
        """[M, 4] unit quaternions (w, x, y, z) mapping the Gaussian's local axes to world."""
        return F.normalize(self._rotation + self._rotation_bias(self._rotation)[None, :], dim=-1)

    @property
    def get_opacity(self) -> torch.Tensor:
        """[M, 1] opacities in (0, 1)."""
        return torch.sigmoid(self._opacity + self._opacity_bias(self._opacity))

    def get_covariance(self, scaling_modifier: float = 1.0) -> torch.Tensor:
        """[M, 3, 3] world-space covariances R diag(s^2) R^T (s = get_scaling * modifier)."""
        rot = quaternion_to_matrix(self.get_rotation)
        s = self.get_scaling * scaling_modifier
        return (rot * s[:, None, :] ** 2) @ rot.transpose(-1, -2)

    # ---- setters from activated values (inverse of the properties) ----
    def from_xyz(self, xyz: torch.Tensor) -> None:
        """Set ``_xyz`` from world positions [M, 3]."""
        aabb = self.aabb.to(xyz)
        self._xyz = (xyz - aabb[None, :3]) / aabb[None, 3:]

    def from_features(self, features: torch.Tensor) -> None:
        """Set ``_features_dc`` from SH-DC coefficients [M, 1, 3] (or [M, 3])."""
        self._features_dc = features.reshape(features.shape[0], 1, 3)

    def from_scaling(self, scales: torch.Tensor) -> None:
        """Set ``_scaling`` from activated scales [M, 3] (3D filter included).

        Scales at or below ``mininum_kernel_size`` cannot be produced by the activation; they map
        to the smallest representable value (the activated scale becomes the filter size).
        """
        _, inverse = _activation(self.scaling_activation_type)
        inner_sq = torch.square(scales) - self.mininum_kernel_size ** 2
        inner = torch.sqrt(inner_sq.clamp_min(MIN_PREFILTER_SCALE ** 2))
        self._scaling = inverse(inner) - self._scale_bias(scales)

    def from_rotation(self, rots: torch.Tensor) -> None:
        """Set ``_rotation`` from quaternions [M, 4] (w, x, y, z); stored un-normalised."""
        self._rotation = rots - self._rotation_bias(rots)[None, :]

    def from_opacity(self, opacities: torch.Tensor) -> None:
        """Set ``_opacity`` from opacities [M, 1] in (0, 1)."""
        self._opacity = inverse_sigmoid(opacities) - self._opacity_bias(opacities)

    # ---- misc ----
    @property
    def num_gaussians(self) -> int:
        return 0 if self._xyz is None else int(self._xyz.shape[0])

    def __len__(self) -> int:
        return self.num_gaussians

    def to(self, device: Union[str, torch.device]) -> "Gaussian":
        """Move every tensor to ``device`` in place; returns self."""
        self.device = torch.device(device)
        self.aabb = self.aabb.to(self.device)
        for name in RAW_ATTRIBUTES + ("_features_rest",):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(self.device))
        return self

    def __repr__(self) -> str:
        return (f"Gaussian(num_gaussians={self.num_gaussians}, aabb={self.init_params['aabb']}, "
                f"scaling_activation={self.scaling_activation_type!r}, device={self.device})")

    def save_ply(self, path: Union[str, os.PathLike],
                 transform: Optional[Sequence[Sequence[float]]] = TRELLIS_PLY_TRANSFORM) -> None:
        """Write a 3DGS PLY; see :func:`save_ply`."""
        save_ply(self, path, transform=transform)

    def load_ply(self, path: Union[str, os.PathLike],
                 transform: Optional[Sequence[Sequence[float]]] = TRELLIS_PLY_TRANSFORM) -> None:
        """Replace this object's attributes by a PLY's content (TRELLIS's in-place API)."""
        loaded = load_ply(path, transform=transform, device=self.device, **self.init_params)
        for name in RAW_ATTRIBUTES + ("_features_rest",):
            setattr(self, name, getattr(loaded, name))


# --------------------------------------------------------------------------------------------
# Decoder head: per-voxel output -> Gaussian
# --------------------------------------------------------------------------------------------

def radical_inverse(base: int, n: int) -> float:
    """Van der Corput radical inverse: the base-``base`` digits of ``n`` mirrored after the point."""
    value, scale = 0.0, 1.0 / base
    while n > 0:
        n, digit = divmod(n, base)
        value += digit * scale
        scale /= base
    return value


def hammersley_sequence(dim: int, n: int, num_samples: int) -> list:
    """Point ``n`` of a ``num_samples``-point Hammersley set in [0, 1)^dim.

    Coordinate 0 is ``n / num_samples``; coordinate d >= 1 is the radical inverse of ``n`` in the
    d-th prime base (2, 3, 5, ...). This is the definition TRELLIS's decoder uses.
    """
    if dim - 1 > len(_PRIMES):
        raise ValueError(f"dim must be <= {len(_PRIMES) + 1}")
    return [n / num_samples] + [radical_inverse(_PRIMES[d], n) for d in range(dim - 1)]


def compute_offset_perturbation(num_gaussians: int = 32, voxel_size: float = 1.5) -> torch.Tensor:
    """TRELLIS's ``offset_perturbation`` buffer: [G, 3] float32.

    Row g is ``atanh((hammersley_3d(g, G) * 2 - 1) / voxel_size)``, so that at a zero network
    output Gaussian g sits at ``(hammersley - 0.5) / resolution`` from its voxel centre (a
    low-discrepancy spread inside the voxel). Computed in float32 after the Hammersley points are
    cast, as TRELLIS does, so the result matches the checkpoint buffer bit for bit.
    """
    points = torch.tensor([hammersley_sequence(3, i, num_gaussians) for i in range(num_gaussians)],
                          dtype=torch.float64).float()
    return torch.atanh((points * 2 - 1) / voxel_size)


def voxel_output_layout(num_gaussians: int = 32) -> dict:
    """Channel ranges of the decoder output: ``{name: (start, stop, components)}``.

    Blocks in order ``_xyz`` (G*3), ``_features_dc`` (G*3), ``_scaling`` (G*3), ``_rotation``
    (G*4), ``_opacity`` (G*1); inside a block the index is ``gaussian * components + component``.
    Total ``14 * G`` channels (448 for G = 32).
    """
    layout, start = {}, 0
    for name, k in VOXEL_OUTPUT_BLOCKS:
        layout[name] = (start, start + num_gaussians * k, k)
        start += num_gaussians * k
    return layout


def gaussians_from_voxel_output(
    feats: torch.Tensor,
    coords_xyz: torch.Tensor,
    resolution: int,
    representation_config: Optional[Mapping[str, Any]] = None,
    offset_perturbation: Optional[torch.Tensor] = None,
    aabb: Sequence[float] = DEFAULT_AABB,
) -> Gaussian:
    """Build one object's Gaussians from the decoder's per-voxel output (``to_representation``).

    Args:
        feats: [N, 14*G] raw output-layer features of one batch item (layout in
            :func:`voxel_output_layout`).
        coords_xyz: [N, 3] integer voxel coordinates (x, y, z) of those rows (no batch column).
        resolution: grid resolution R (voxel centre = (coord + 0.5) / R in [0, 1]).
        representation_config: TRELLIS's ``representation_config`` dict (``lr``,
            ``perturb_offset``, ``voxel_size``, ``num_gaussians``, ``3d_filter_kernel_size``,
            ``scaling_bias``, ``opacity_bias``, ``scaling_activation``); missing keys take the
            official ``slat_dec_gs`` values.
        offset_perturbation: [G, 3] the model's buffer; computed with
            :func:`compute_offset_perturbation` when None.
        aabb: the Gaussian's box (TRELLIS always uses the default).
    Returns:
        A :class:`Gaussian` with M = N*G rows; rows ``G*i .. G*i+G-1`` belong to voxel i.
        ``_xyz = (coord + 0.5) / R + tanh(raw_xyz * lr + perturbation[g]) / R * 0.5 * voxel_size``
        (before the aabb mapping); every other block is ``raw * lr``.
    """
    cfg = dict(DEFAULT_REPRESENTATION_CONFIG)
    cfg.update(representation_config or {})
    lr = dict(DEFAULT_REPRESENTATION_CONFIG["lr"])
    lr.update(cfg.get("lr") or {})
    num_g = int(cfg["num_gaussians"])
    layout = voxel_output_layout(num_g)
    n_vox = feats.shape[0]
    if feats.dim() != 2 or feats.shape[1] != CHANNELS_PER_GAUSSIAN * num_g:
        raise ValueError(f"feats must be [N, {CHANNELS_PER_GAUSSIAN * num_g}] for num_gaussians={num_g}, "
                         f"got {tuple(feats.shape)}")
    if coords_xyz.shape != (n_vox, 3):
        raise ValueError(f"coords_xyz must be [{n_vox}, 3], got {tuple(coords_xyz.shape)}")

    gaussian = Gaussian(
        aabb=aabb,
        sh_degree=0,
        mininum_kernel_size=cfg["3d_filter_kernel_size"],
        scaling_bias=cfg["scaling_bias"],
        opacity_bias=cfg["opacity_bias"],
        scaling_activation=cfg["scaling_activation"],
        device=feats.device,
    )

    def block(name: str) -> torch.Tensor:  # [N, G, k] * lr
        start, stop, k = layout[name]
        return feats[:, start:stop].reshape(n_vox, num_g, k) * lr[name]

    centres = (coords_xyz.to(feats.dtype) + 0.5) / resolution                        # [N, 3]
    offset = block("_xyz")
    if cfg["perturb_offset"]:
        if offset_perturbation is None:
            offset_perturbation = compute_offset_perturbation(num_g, cfg["voxel_size"])
        offset = offset + offset_perturbation.to(offset)
    offset = torch.tanh(offset) / resolution * 0.5 * cfg["voxel_size"]
    gaussian._xyz = (centres[:, None, :] + offset).flatten(0, 1)
    gaussian._features_dc = block("_features_dc").reshape(n_vox * num_g, 1, 3)
    gaussian._scaling = block("_scaling").flatten(0, 1)
    gaussian._rotation = block("_rotation").flatten(0, 1)
    gaussian._opacity = block("_opacity").flatten(0, 1)
    return gaussian


# --------------------------------------------------------------------------------------------
# PLY I/O
# --------------------------------------------------------------------------------------------

class PlyFormatError(ValueError):
    """A file is not a readable 3DGS PLY (bad header, missing properties, bad values)."""


def _check_transform(transform: Optional[Sequence[Sequence[float]]]) -> Optional[np.ndarray]:
    if transform is None:
        return None
    t = np.asarray(transform, dtype=np.float64)
    if t.shape != (3, 3):
        raise ValueError(f"transform must be a 3x3 rotation matrix, got shape {t.shape}")
    if not np.allclose(t @ t.T, np.eye(3), atol=ROTATION_MATRIX_ATOL) or np.linalg.det(t) < 0:
        raise ValueError("transform must be a proper rotation (orthonormal, det +1)")
    return t


def ply_attributes(gaussian: Gaussian, transform: Optional[Sequence[Sequence[float]]] = TRELLIS_PLY_TRANSFORM):
    """The values a 3DGS file stores, float64 on the CPU, in the file frame ``x' = T x``:
    ``(xyz [M,3], f_dc [M,3], logit(opacity) [M,1], log(scale) [M,3], unit quaternion (w,x,y,z) [M,4])``.
    Shared by :func:`save_ply` and the other splat writers (``ss4d.exports.splat``)."""
    t = _check_transform(transform)
    with torch.no_grad():
        xyz = gaussian.get_xyz.detach().double().cpu()
        f_dc = gaussian.get_features.detach().double().cpu().reshape(-1, 3)
        opacity = inverse_sigmoid(gaussian.get_opacity.detach().double().cpu()).reshape(-1, 1)
        scale = torch.log(gaussian.get_scaling.detach().double().cpu())
        rot = gaussian.get_rotation.detach().double().cpu()
        if t is not None:
            tt = torch.from_numpy(t)
            xyz = xyz @ tt.T
            rot = matrix_to_quaternion(tt @ quaternion_to_matrix(rot))
    return xyz, f_dc, opacity, scale, rot


def save_ply(
    gaussian: Gaussian,
    path: Union[str, os.PathLike],
    transform: Optional[Sequence[Sequence[float]]] = TRELLIS_PLY_TRANSFORM,
) -> None:
    """Write ``gaussian`` as a standard 3DGS PLY (binary little endian, float32).

    Properties, in order: :data:`PLY_PROPERTY_NAMES`. Stored values: world xyz, zero normals,
    ``f_dc`` = SH-DC coefficients, ``opacity`` = logit(get_opacity), ``scale_i`` =
    log(get_scaling), ``rot`` = unit quaternion (w, x, y, z).

    Args:
        transform: 3x3 proper rotation applied to the world frame before writing (positions
            ``x' = T x``, orientations ``R' = T R``; scales unchanged). Default
            :data:`TRELLIS_PLY_TRANSFORM` (what TRELLIS writes: object +Z becomes file -Y);
            ``None`` writes the Z-up object frame as is.

    The file is written to a temporary file in the same folder and renamed over ``path``, so
    readers never see a half-written file.
    """
    from plyfile import PlyData, PlyElement

    xyz, f_dc, opacity, scale, rot = ply_attributes(gaussian, transform)
    columns = torch.cat([xyz, torch.zeros_like(xyz), f_dc, opacity, scale, rot], dim=1).numpy()
    vertices = np.empty(columns.shape[0], dtype=[(name, "<f4") for name in PLY_PROPERTY_NAMES])
    for i, name in enumerate(PLY_PROPERTY_NAMES):
        vertices[name] = columns[:, i]
    ply = PlyData([PlyElement.describe(vertices, PLY_ELEMENT)], text=False, byte_order="<")

    with atomic_file(path, "wb") as f:
        ply.write(f)


def load_ply(
    path: Union[str, os.PathLike],
    transform: Optional[Sequence[Sequence[float]]] = TRELLIS_PLY_TRANSFORM,
    device: Union[str, torch.device] = "cpu",
    **gaussian_kwargs: Any,
) -> Gaussian:
    """Read a 3DGS PLY written by :func:`save_ply`, TRELLIS or other 3DGS tools.

    Args:
        transform: the rotation the file was written with; its inverse (T^T) is applied, so the
            default brings a TRELLIS / :func:`save_ply` file back to the Z-up object frame.
        device: where the tensors are created.
        **gaussian_kwargs: :class:`Gaussian` constructor arguments (aabb, biases, activation);
            the activated values round-trip whatever they are, except that scales below
            ``mininum_kernel_size`` are raised to it.
    Returns:
        A float32 :class:`Gaussian`. Extra properties (normals, ``f_rest_*``) are ignored;
        ``f_rest_*`` (view-dependent colour) triggers a warning.
    Raises:
        FileNotFoundError: no such file.
        PlyFormatError: not a PLY, no ``vertex`` element, missing or non-numeric required
            properties, or a zero quaternion.
    """
    from plyfile import PlyData

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no PLY file at {path}")
    t = _check_transform(transform)
    try:
        ply = PlyData.read(str(path))
    except Exception as exc:  # plyfile raises PlyParseError / ValueError / struct errors
        raise PlyFormatError(f"{path}: not a readable PLY file ({type(exc).__name__}: {exc})") from exc
    if PLY_ELEMENT not in [el.name for el in ply.elements]:
        raise PlyFormatError(f"{path}: no '{PLY_ELEMENT}' element (found {[el.name for el in ply.elements]})")
    vertex = ply[PLY_ELEMENT]
    present = [p.name for p in vertex.properties]
    required = [n for n in PLY_PROPERTY_NAMES if n not in ("nx", "ny", "nz")]
    missing = [n for n in required if n not in present]
    if missing:
        raise PlyFormatError(f"{path}: vertex element lacks the 3DGS properties {missing}")
    if any(n.startswith("f_rest_") for n in present):
        warnings.warn(f"{path}: f_rest_* (SH degree > 0) ignored; only the DC colour is loaded")

    def column(names: Sequence[str]) -> torch.Tensor:
        try:
            cols = [np.asarray(vertex[n], dtype=np.float64) for n in names]
        except (TypeError, ValueError) as exc:
            raise PlyFormatError(f"{path}: non-numeric property among {list(names)}") from exc
        return torch.from_numpy(np.stack(cols, axis=1))

    xyz = column(("x", "y", "z"))
    f_dc = column(("f_dc_0", "f_dc_1", "f_dc_2"))
    opacity = torch.sigmoid(column(("opacity",)))
    scales = torch.exp(column(("scale_0", "scale_1", "scale_2")))
    rot = column(("rot_0", "rot_1", "rot_2", "rot_3"))
    norms = rot.norm(dim=1)
    if not bool(torch.all(torch.isfinite(norms) & (norms > 0))):
        raise PlyFormatError(f"{path}: zero or non-finite rotation quaternion(s)")
    rot = rot / norms[:, None]
    if t is not None:
        tt = torch.from_numpy(t)
        xyz = xyz @ tt                      # row-vector form of T^T x
        rot = matrix_to_quaternion(tt.T @ quaternion_to_matrix(rot))

    gaussian = Gaussian(device=device, **gaussian_kwargs)
    gaussian.from_xyz(xyz)
    gaussian.from_features(f_dc)
    gaussian.from_opacity(opacity)
    gaussian.from_scaling(scales)
    gaussian.from_rotation(rot)
    for name in RAW_ATTRIBUTES:
        setattr(gaussian, name, getattr(gaussian, name).to(device=gaussian.device, dtype=torch.float32))
    return gaussian

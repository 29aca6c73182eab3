"""3D representations (TRELLIS-compatible): Gaussians and their PLY I/O."""
from .gaussian import (
    DEFAULT_AABB,
    PLY_PROPERTY_NAMES,
    SH_C0,
    TRELLIS_PLY_TRANSFORM,
    Gaussian,
    PlyFormatError,
    compute_offset_perturbation,
    gaussians_from_voxel_output,
    hammersley_sequence,
    load_ply,
    matrix_to_quaternion,
    ply_attributes,
    quaternion_to_matrix,
    save_ply,
    voxel_output_layout,
)

__all__ = [
    "Gaussian", "gaussians_from_voxel_output", "compute_offset_perturbation", "hammersley_sequence",
    "voxel_output_layout", "save_ply", "load_ply", "ply_attributes", "PlyFormatError", "quaternion_to_matrix",
    "matrix_to_quaternion", "DEFAULT_AABB", "TRELLIS_PLY_TRANSFORM", "PLY_PROPERTY_NAMES", "SH_C0",
]

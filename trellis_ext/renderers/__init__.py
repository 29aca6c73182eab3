"""Gaussian rendering: cameras and ``render_gaussians`` (gsplat on CUDA, PyTorch reference)."""
from .camera import (
    Camera,
    camera_from_blender_c2w,
    intrinsics_from_fov,
    look_at_extrinsics,
    orbit_camera,
    orbit_trajectory,
    project_points,
)
from .gaussian_render import RenderOutput, rasterize_gaussians, render_gaussians, resolve_backend, sh0_to_rgb
from .rasterize_gsplat import gsplat_available
from .rasterize_torch import ProjectedGaussians, project_gaussians, rasterize_brute_force, rasterize_tiles

__all__ = [
    "Camera", "camera_from_blender_c2w", "intrinsics_from_fov", "look_at_extrinsics", "orbit_camera", "orbit_trajectory",
    "project_points", "RenderOutput", "render_gaussians", "rasterize_gaussians", "resolve_backend",
    "sh0_to_rgb", "gsplat_available", "ProjectedGaussians", "project_gaussians", "rasterize_tiles",
    "rasterize_brute_force",
]

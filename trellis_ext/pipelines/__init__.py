"""Samplers and the 3D image-to-3D pipeline."""
from .base import PipelineLoadError, read_pipeline_json
from .image_to_3d import ImageTo3DPipeline, ImageTo3DResult
from .samplers import FlowEulerCfgSampler, FlowEulerGuidanceIntervalSampler, FlowEulerSampler, time_grid

__all__ = ["PipelineLoadError", "read_pipeline_json", "ImageTo3DPipeline", "ImageTo3DResult", "FlowEulerCfgSampler",
           "FlowEulerGuidanceIntervalSampler", "FlowEulerSampler", "time_grid"]

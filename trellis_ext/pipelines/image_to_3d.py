"""Image-to-3D (TRELLIS's two-stage pipeline) driven by conditioning tokens.

Stage 1: noise [B, 8, r, r, r] -> SS flow -> SS decoder -> occupied voxels (logit > 0).
Stage 2: noise on those voxels -> SLat flow -> de-normalise (·std + mean) -> Gaussian decoder.
Conditioning tokens ([B, L, C], e.g. DINOv2 features) are passed in; ``neg_cond`` defaults to zeros.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..sparse import SparseTensor
from .base import PIPELINE_JSON, build_sampler, load_models, read_pipeline_json
from .samplers import SamplerOutput

__all__ = ["ImageTo3DPipeline", "ImageTo3DResult"]

PIPELINE_NAMES = ("TrellisImageTo3DPipeline",)
REQUIRED_MODELS = ("sparse_structure_flow_model", "sparse_structure_decoder", "slat_flow_model", "slat_decoder_gs")
OCCUPANCY_THRESHOLD = 0.0


@dataclass
class ImageTo3DResult:
    coords: torch.Tensor                     # [N, 4] int32 (batch, x, y, z)
    slat: SparseTensor                       # de-normalised latents
    gaussians: List[Any]                     # one Gaussian per batch item
    ss: Optional[SamplerOutput] = None
    slat_trajectory: Optional[SamplerOutput] = None
    extras: Dict[str, Any] = field(default_factory=dict)


class ImageTo3DPipeline:
    """Loads a TRELLIS-image-large style folder and samples from conditioning tokens."""

    def __init__(self, models: Dict[str, torch.nn.Module], ss_sampler, ss_params: Dict[str, Any],
                 slat_sampler, slat_params: Dict[str, Any], slat_normalization: Dict[str, List[float]],
                 config: Dict[str, Any] = None):
        self.models = models
        self.ss_sampler, self.ss_params = ss_sampler, ss_params
        self.slat_sampler, self.slat_params = slat_sampler, slat_params
        self.slat_mean = torch.tensor(slat_normalization["mean"], dtype=torch.float32)
        self.slat_std = torch.tensor(slat_normalization["std"], dtype=torch.float32)
        self.config = config or {}

    @classmethod
    def from_pretrained(cls, path: str, device: Optional[torch.device] = None, **overrides) -> "ImageTo3DPipeline":
        config = read_pipeline_json(path, PIPELINE_NAMES)
        args = config["args"]
        source = os.path.join(path, PIPELINE_JSON)
        models = load_models(path, args["models"], REQUIRED_MODELS, device=device, **overrides)
        ss_sampler, ss_params = build_sampler(args["sparse_structure_sampler"], source)
        slat_sampler, slat_params = build_sampler(args["slat_sampler"], source)
        return cls(models, ss_sampler, ss_params, slat_sampler, slat_params, args["slat_normalization"], config)

    @property
    def device(self) -> torch.device:
        return next(self.models["sparse_structure_flow_model"].parameters()).device

    # ------------------------------------------------------------------ stage 1
    @torch.no_grad()
    def sample_sparse_structure(self, cond: torch.Tensor, neg_cond: torch.Tensor, noise: torch.Tensor,
                                **params) -> Tuple[torch.Tensor, SamplerOutput, torch.Tensor]:
        """noise [B, C, r, r, r] -> (coords [N, 4] int32, sampler trajectory, decoder logits)."""
        flow = self.models["sparse_structure_flow_model"]
        p = {**self.ss_params, **params}
        out = self.ss_sampler.sample(flow, noise, cond, neg_cond=neg_cond, **p)
        logits = self.models["sparse_structure_decoder"](out.samples)
        coords = torch.argwhere(logits > OCCUPANCY_THRESHOLD)[:, [0, 2, 3, 4]].int()
        return coords, out, logits

    # ------------------------------------------------------------------ stage 2
    @torch.no_grad()
    def sample_slat(self, cond: torch.Tensor, neg_cond: torch.Tensor, noise: SparseTensor, **params):
        """noise SparseTensor [N, 8] -> (de-normalised SparseTensor, trajectory)."""
        flow = self.models["slat_flow_model"]
        p = {**self.slat_params, **params}
        out = self.slat_sampler.sample(flow, noise, cond, neg_cond=neg_cond, **p)
        std = self.slat_std.to(out.samples.device, out.samples.dtype)
        mean = self.slat_mean.to(out.samples.device, out.samples.dtype)
        return out.samples * std[None] + mean[None], out

    def decode_slat(self, slat: SparseTensor):
        return self.models["slat_decoder_gs"](slat)

    @torch.no_grad()
    def run(self, cond: torch.Tensor, neg_cond: Optional[torch.Tensor] = None, seed: Optional[int] = 42,
            ss_noise: Optional[torch.Tensor] = None, slat_noise_feats: Optional[torch.Tensor] = None,
            ss_params: Optional[Dict[str, Any]] = None, slat_params: Optional[Dict[str, Any]] = None) -> ImageTo3DResult:
        """Full run from conditioning tokens [B, L, C]. Noise is drawn after ``torch.manual_seed(seed)``
        (as TRELLIS) unless given explicitly."""
        if neg_cond is None:
            neg_cond = torch.zeros_like(cond)
        if seed is not None:
            torch.manual_seed(seed)
        flow = self.models["sparse_structure_flow_model"]
        if ss_noise is None:
            r = flow.resolution
            ss_noise = torch.randn(cond.shape[0], flow.in_channels, r, r, r, device=cond.device)
        coords, ss_out, logits = self.sample_sparse_structure(cond, neg_cond, ss_noise, **(ss_params or {}))
        slat_flow = self.models["slat_flow_model"]
        if slat_noise_feats is None:
            slat_noise_feats = torch.randn(coords.shape[0], slat_flow.in_channels, device=cond.device)
        noise = SparseTensor(slat_noise_feats, coords)
        slat, slat_out = self.sample_slat(cond, neg_cond, noise, **(slat_params or {}))
        gaussians = self.decode_slat(slat)
        return ImageTo3DResult(coords=coords, slat=slat, gaussians=gaussians, ss=ss_out, slat_trajectory=slat_out,
                               extras={"ss_decoder_logits": logits})

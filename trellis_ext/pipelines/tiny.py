"""Tiny random-weight pipeline folders (for the demo and tests; no download needed).

``write_tiny_image_to_3d(path)`` writes a TRELLIS-layout folder (``pipeline.json`` + ``ckpts/``)
whose four models use the small configs of the official tiny fixtures, with every weight drawn
from a seeded generator (TRELLIS's zero-inits would make the outputs trivially zero) and the SS
decoder's output bias calibrated so a fixed fraction of the grid is occupied. The outputs are
meaningless shapes: this exercises the full path, not quality.
"""
from __future__ import annotations

import copy
import json
import os
from typing import Any, Dict

import torch
import torch.nn as nn

from ..atomic import atomic_directory
from ..models.checkpoint import build_model, save_pretrained
from ..representations.gaussian import DEFAULT_REPRESENTATION_CONFIG
from .base import PIPELINE_JSON

__all__ = ["randomize_weights", "calibrate_occupancy", "write_tiny_image_to_3d", "TINY_3D_CONFIGS",
           "TINY_COND_CHANNELS", "TINY_COND_TOKENS"]

NORM_JITTER = 0.1        # norm weights = 1 + 0.1·N(0, 1)
BIAS_STD = 0.1           # biases = 0.1·N(0, 1)
TARGET_OCCUPANCY = 0.02  # fraction of the SS grid kept after calibration
TINY_COND_CHANNELS = 32
TINY_COND_TOKENS = 6
GS_REPRESENTATION = copy.deepcopy(DEFAULT_REPRESENTATION_CONFIG)  # the official slat_dec_gs config
TINY_3D_CONFIGS: Dict[str, Dict[str, Any]] = {
    "sparse_structure_decoder": {"name": "SparseStructureDecoder", "args": {
        "out_channels": 1, "latent_channels": 8, "num_res_blocks": 1, "channels": [32, 16, 8],
        "num_res_blocks_middle": 1, "use_fp16": False}},
    "sparse_structure_flow_model": {"name": "SparseStructureFlowModel", "args": {
        "resolution": 8, "in_channels": 8, "out_channels": 8, "model_channels": 64,
        "cond_channels": TINY_COND_CHANNELS, "num_blocks": 2, "num_heads": 4, "mlp_ratio": 4, "patch_size": 1,
        "pe_mode": "ape", "qk_rms_norm": True, "use_fp16": False}},
    "slat_flow_model": {"name": "SLatFlowModel", "args": {
        "resolution": 32, "in_channels": 8, "out_channels": 8, "model_channels": 64,
        "cond_channels": TINY_COND_CHANNELS, "num_blocks": 2, "num_heads": 4, "mlp_ratio": 4, "patch_size": 2,
        "num_io_res_blocks": 2, "io_block_channels": [16], "pe_mode": "ape", "qk_rms_norm": True, "use_fp16": False}},
    "slat_decoder_gs": {"name": "SLatGaussianDecoder", "args": {
        "resolution": 32, "model_channels": 64, "latent_channels": 8, "num_blocks": 2, "num_heads": 4,
        "mlp_ratio": 4, "attn_mode": "swin", "window_size": 8, "use_fp16": False,
        "representation_config": GS_REPRESENTATION}},
}
SAMPLER = {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
           "params": {"steps": 4, "cfg_strength": 3.0, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}}
SLAT_NORMALIZATION = {"mean": [0.0] * 8, "std": [1.0] * 8}


def randomize_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Redraw every parameter: norm weights / RMS gammas 1 + 0.1·N, biases 0.1·N, the rest N/√fan_in."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            leaf = name.rsplit(".", 1)[-1]
            is_norm = "norm" in name and leaf == "weight" or leaf == "gamma"
            if is_norm:
                p.copy_(1 + NORM_JITTER * noise)
            elif leaf == "bias":
                p.copy_(BIAS_STD * noise)
            else:
                fan_in = max(1, p[0].numel()) if p.dim() > 1 else p.numel()
                p.copy_(noise / fan_in ** 0.5)
    return model


def calibrate_occupancy(decoder: nn.Module, latents: torch.Tensor, fraction: float = TARGET_OCCUPANCY) -> float:
    """Shift the decoder's last bias so that ``fraction`` of ``decoder(latents)`` is > 0; returns the shift."""
    with torch.no_grad():
        logits = decoder(latents).flatten()
        threshold = torch.quantile(logits, 1 - fraction).item()
        decoder.out_layer[-1].bias -= threshold
    return threshold


def write_tiny_image_to_3d(path: str, seed: int = 0, overwrite: bool = False) -> str:
    """Write a tiny random TRELLIS image-to-3D folder at ``path`` (atomically); returns ``path``."""
    if os.path.isdir(path) and not overwrite:
        return path
    with atomic_directory(path, prefix=".tiny-") as tmp:
        models = {}
        for i, (key, cfg) in enumerate(TINY_3D_CONFIGS.items()):
            models[key] = randomize_weights(build_model(cfg, source="tiny config"), seed + i).eval()
        flow = models["sparse_structure_flow_model"]
        gen = torch.Generator().manual_seed(seed)
        r = flow.resolution
        calibrate_occupancy(models["sparse_structure_decoder"], torch.randn(1, flow.in_channels, r, r, r, generator=gen))
        entries = {}
        for key, model in models.items():
            stem = f"ckpts/{key}_tiny"
            save_pretrained(model, os.path.join(tmp, stem), name=TINY_3D_CONFIGS[key]["name"])
            entries[key] = stem
        pipeline = {"name": "TrellisImageTo3DPipeline", "args": {
            "models": entries, "sparse_structure_sampler": SAMPLER, "slat_sampler": SAMPLER,
            "slat_normalization": SLAT_NORMALIZATION, "image_cond_model": "dinov2_vitl14_reg"}}
        with open(os.path.join(tmp, PIPELINE_JSON), "w", encoding="utf-8") as f:
            json.dump(pipeline, f, indent=4)
    return path

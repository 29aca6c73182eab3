"""A tiny random-weight SS4D pipeline folder (for the demo, tests and benchmarks; nothing to download).

``write_tiny_video_to_4d(path)`` writes the official folder layout (``pipeline.json`` named
``TrellisVideoTo4DPipeline`` + ``ckpts/<name>.{json,safetensors}`` + ``image_cond_model.safetensors``)
with the small configs of the SS4D reference fixture (``../shared/ss4d_reference/tiny_pipeline``):
a 8³ structure flow, TRELLIS's tiny structure decoder (8³ -> 32³), a 32³ SLat flow with CompNet and
a 32³ 4D Gaussian decoder, all 64 channels wide, conditioned by the tiny patch-embed stand-in for
DINOv2 (32 channels, 7×7 patches + 5 prefix tokens). Every weight is drawn from a seeded
generator; the structure decoder's output bias is then shifted so that about
:data:`TARGET_OCCUPANCY` of the 32³ grid is occupied after a sampling run.

The weights are **random**: the output is an abstract shape, not a reconstruction of the input.
``pipeline.json`` says so (``{"ss4d": {"random_weights": true}}``), and the CLI prints it.
"""
from __future__ import annotations

import copy
import json
import os
from typing import Any, Dict

import torch

import ss4d.models  # noqa: F401  (registers the 4D classes)
from trellis_ext.atomic import atomic_directory, merged_directory
from trellis_ext.models.checkpoint import build_model, save_pretrained
from trellis_ext.pipelines.base import PIPELINE_JSON
from trellis_ext.pipelines.tiny import GS_REPRESENTATION, TINY_3D_CONFIGS, calibrate_occupancy, randomize_weights

from .conditioning.dinov2 import DINOV2_NAME
from .conditioning.patch_embed import PatchEmbedEncoder
from .conditioning.resolve import ENCODER_FILE
from .pipeline import META_KEY, PIPELINE_NAME
from .preprocess import CONDITION_SIZE

__all__ = ["write_tiny_video_to_4d", "TINY_4D_CONFIGS", "TINY_COND_CHANNELS", "TARGET_OCCUPANCY", "RANDOM_NOTE"]

TINY_COND_CHANNELS = 32
TINY_PATCH = 74           # CONDITION_SIZE (518) / 74 = 7 patches per side
TINY_PREFIX_TOKENS = 5    # CLS + 4 registers, like DINOv2-reg
TARGET_OCCUPANCY = 0.015  # ~490 of 32³ voxels per frame
CALIBRATION_FRAMES = 4
TINY_STEPS = 4            # Euler steps per stage (the released models use 25)
SS_CFG, SLAT_CFG = 7.5, 3.0  # guidance strengths of the released SS4D / TRELLIS samplers
RANDOM_NOTE = ("tiny pipeline with RANDOM weights (ss4d.tiny): it exercises the whole path, "
               "but its output is an abstract shape, not a reconstruction of the input")

TINY_4D_CONFIGS: Dict[str, Dict[str, Any]] = {
    "sparse_structure_flow_model": {"name": "SparseStructureFlow4DModel", "args": {
        "resolution": 8, "in_channels": 8, "out_channels": 8, "model_channels": 64,
        "cond_channels": TINY_COND_CHANNELS, "num_blocks": 2, "num_heads": 4, "mlp_ratio": 4, "patch_size": 1,
        "pe_mode": "rope_t", "qk_rms_norm": True, "use_fp16": False, "use_checkpoint": False,
        "expand_self_attn": True, "window_size": 8}},
    "sparse_structure_decoder": copy.deepcopy(TINY_3D_CONFIGS["sparse_structure_decoder"]),
    "slat_flow_model": {"name": "SLatFlow4DModel", "args": {
        "resolution": 32, "in_channels": 8, "out_channels": 8, "model_channels": 64,
        "cond_channels": TINY_COND_CHANNELS, "num_blocks": 2, "num_heads": 4, "mlp_ratio": 4, "patch_size": 2,
        "num_io_res_blocks": 2, "num_io_res4d_blocks": 2, "io_block_channels": [16], "io_block_channels_t": [64],
        "pe_mode": "rope_t", "qk_rms_norm": True, "use_fp16": False, "use_checkpoint": False,
        "expand_self_attn": True, "conv_type": "3D_1D"}},
    "slat_decoder_gs": {"name": "SLatGaussianDecoder", "args": {
        "resolution": 32, "model_channels": 64, "latent_channels": 8, "num_blocks": 2, "num_heads": 4,
        "mlp_ratio": 4, "attn_mode": "swin", "window_size": 8, "pe_mode": "rope_t", "use_fp16": False,
        "use_checkpoint": False, "expand_self_attn": True, "representation_config": GS_REPRESENTATION}},
}
STEMS = {"sparse_structure_flow_model": "ckpts/ss_flow_video_4d_tiny",
         "sparse_structure_decoder": "ckpts/ss_dec_conv3d_tiny",
         "slat_flow_model": "ckpts/slat_flow_video_4d_tiny",
         "slat_decoder_gs": "ckpts/slat_dec_gs_4d_tiny"}


def _sampler(cfg: float) -> Dict[str, Any]:
    return {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
            "params": {"steps": TINY_STEPS, "cfg_strength": cfg, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}}


#: TRELLIS-image-large's SLat normalisation (SS4D's own values are not public).
SLAT_NORMALIZATION = {
    "mean": [-2.1687545776367188, -0.004347046371549368, -0.13352349400520325, -0.08418072760105133,
             -0.5271206498146057, 0.7238689064979553, -1.1414450407028198, 1.2039363384246826],
    "std": [2.377650737762451, 2.386378288269043, 2.124418020248413, 2.1748552322387695,
            2.663944721221924, 2.371192216873169, 2.6217446327209473, 2.684523105621338]}


def _calibrate(models: Dict[str, torch.nn.Module], encoder: PatchEmbedEncoder, seed: int) -> float:
    """Shift the SS decoder's last bias so ``TARGET_OCCUPANCY`` of the grid is occupied after a
    (seeded, CPU) sampling run on random frames."""
    from trellis_ext.pipelines.samplers import FlowEulerGuidanceIntervalSampler

    gen = torch.Generator().manual_seed(seed)
    flow, decoder = models["sparse_structure_flow_model"], models["sparse_structure_decoder"]
    images = torch.rand(CALIBRATION_FRAMES, 3, CONDITION_SIZE, CONDITION_SIZE, generator=gen)
    cond = encoder.encode(images)
    r = flow.resolution
    noise = torch.randn(CALIBRATION_FRAMES, flow.in_channels, r, r, r, generator=gen)
    params = _sampler(SS_CFG)["params"]
    with torch.no_grad():
        z = FlowEulerGuidanceIntervalSampler().sample(flow, noise, cond, neg_cond=torch.zeros_like(cond),
                                                      num_frames=CALIBRATION_FRAMES, keep_trajectory=False,
                                                      **params).samples
    return calibrate_occupancy(decoder, z, TARGET_OCCUPANCY)


def write_tiny_video_to_4d(path: str, seed: int = 0, overwrite: bool = False) -> str:
    """Write the tiny random SS4D folder at ``path``; kept as is if it already holds a
    ``pipeline.json``, unless ``overwrite``.

    A new or empty ``path`` is written atomically. Into an existing non-empty folder the model
    files are moved one by one (``merged_directory``): files already there that are not written
    here stay, so a user's files in that folder are never removed.
    """
    if os.path.isfile(os.path.join(path, PIPELINE_JSON)) and not overwrite:
        return path
    existing = os.path.isdir(path) and bool(os.listdir(path))
    writer = merged_directory if existing else atomic_directory
    with writer(path, prefix=".tiny4d-") as tmp:
        models = {}
        for i, (key, cfg) in enumerate(TINY_4D_CONFIGS.items()):
            models[key] = randomize_weights(build_model(cfg, source="tiny 4D config"), seed + i).eval()
        encoder = PatchEmbedEncoder.random(TINY_COND_CHANNELS, TINY_PATCH, TINY_PREFIX_TOKENS, seed=seed + 10)
        shift = _calibrate(models, encoder, seed)
        for key, model in models.items():
            save_pretrained(model, os.path.join(tmp, STEMS[key]), name=TINY_4D_CONFIGS[key]["name"])
        encoder.save(os.path.join(tmp, ENCODER_FILE))
        pipeline = {
            "name": PIPELINE_NAME,
            "args": {"models": STEMS, "sparse_structure_sampler": _sampler(SS_CFG), "slat_sampler": _sampler(SLAT_CFG),
                     "slat_normalization": SLAT_NORMALIZATION, "image_cond_model": DINOV2_NAME},
            META_KEY: {"random_weights": True, "note": RANDOM_NOTE, "seed": seed,
                     "ss_decoder_bias_shift": shift, "target_occupancy": TARGET_OCCUPANCY},
        }
        with open(os.path.join(tmp, PIPELINE_JSON), "w", encoding="utf-8") as f:
            json.dump(pipeline, f, indent=4)
    return path

"""Build the four SS4D stages from TRELLIS weights ("inflation").

Every TRELLIS tensor is loaded on its unchanged key; the only parameters TRELLIS lacks are the
temporal ones, which start so that the 4D model equals TRELLIS frame by frame where the design
allows:

| stage | new parameters | init |
|---|---|---|
| structure flow (released design: windowed temporal self-attention) | none (RoPE-t is parameter-free) | — |
| structure flow with ``insert_temporal`` (paper's Temporal Layer) | ``temp_attn``, ``adaLN_modulation_temporal`` | zero gate output (layer = identity); TRELLIS's ``norm2`` affine folded into ``cross_attn.to_q`` because the cross-attention pre-norm becomes the non-affine ``norm4`` |
| SLat flow (CompNet) | ``input_blocks_t``, ``out_blocks_t`` | ``conv2`` zero (res-blocks start as their skip), ``out_blocks_t`` skip as [I \\| 0] |
| Gaussian decoder / SLat encoder | none (4D swin + RoPE-t are parameter-free) | — |
| structure VAE | none: TRELLIS's SS decoder/encoder applied per frame | — |

The 4D arguments added to each TRELLIS config are in ``configs/ss4d/inflate_from_trellis.json``.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional, Union

import torch
import torch.nn as nn

from trellis_ext.pipelines.base import load_models, read_pipeline_json

from .slat_flow_4d import inflate_slat_flow
from .slat_vae_4d import inflate_slat_decoder, inflate_slat_encoder
from .ss_flow_4d import inflate_ss_flow

__all__ = ["inflate_from_trellis", "load_inflation_config", "DEFAULT_INFLATION_CONFIG", "TRELLIS_KEYS"]

REPO_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")
DEFAULT_INFLATION_CONFIG = os.path.join(REPO_CONFIGS, "ss4d", "inflate_from_trellis.json")
# pipeline.json keys of the TRELLIS image-to-3D folder that SS4D needs (rf / mesh decoders are not used)
TRELLIS_KEYS = ("sparse_structure_flow_model", "sparse_structure_decoder", "slat_flow_model", "slat_decoder_gs")
INFLATORS = {
    "sparse_structure_flow_model": inflate_ss_flow,
    "slat_flow_model": inflate_slat_flow,
    "slat_decoder_gs": inflate_slat_decoder,
    "slat_encoder": inflate_slat_encoder,
}
PASS_THROUGH = ("sparse_structure_decoder", "sparse_structure_encoder")  # per-frame 3D models, unchanged


def load_inflation_config(config: Union[None, str, Mapping[str, Any]] = None) -> Dict[str, Dict[str, Any]]:
    """The per-stage 4D args: a dict, a JSON path, or (None) the shipped default."""
    if config is None:
        config = DEFAULT_INFLATION_CONFIG
    if isinstance(config, str):
        with open(config, "r", encoding="utf-8") as f:
            config = json.load(f)
    return {k: dict(v) for k, v in config.items() if not k.startswith("_")}


def inflate_from_trellis(source: Union[str, Mapping[str, nn.Module]],
                         config: Union[None, str, Mapping[str, Any]] = None,
                         device: Optional[torch.device] = None) -> Dict[str, nn.Module]:
    """Build the SS4D stages from TRELLIS.

    Args:
        source: a TRELLIS-image-large folder (``pipeline.json`` + ``ckpts/``), or a dict of loaded
            TRELLIS models keyed like ``pipeline.json`` (``sparse_structure_flow_model``,
            ``sparse_structure_decoder``, ``slat_flow_model``, ``slat_decoder_gs``; optionally
            ``slat_encoder`` / ``sparse_structure_encoder``).
        config: per-stage 4D args (see ``load_inflation_config``).
        device: where to load a folder's models.
    Returns:
        ``{key: model}`` with the same keys: 4D models for the flows, the Gaussian decoder and the SLat
        encoder; the SS decoder/encoder unchanged (they are applied per frame).
    """
    args = load_inflation_config(config)
    if isinstance(source, str):
        spec = read_pipeline_json(source)
        wanted = {k: v for k, v in spec["args"]["models"].items() if k in TRELLIS_KEYS}
        models = load_models(source, wanted, required=TRELLIS_KEYS, device=device)
    else:
        models = dict(source)
        missing = [k for k in TRELLIS_KEYS if k not in models]
        if missing:
            raise KeyError(f"inflate_from_trellis needs the TRELLIS models {', '.join(missing)}")
    out: Dict[str, nn.Module] = {}
    for key, model in models.items():
        if key in INFLATORS:
            out[key] = INFLATORS[key](model, **args.get(key, {}))
        elif key in PASS_THROUGH:
            out[key] = model
        else:
            raise KeyError(f"inflate_from_trellis: unknown model key {key!r}")
    return out

"""Pretrained-folder loading shared by pipelines: ``pipeline.json`` + ``ckpts/<name>.{json,safetensors}``.

``pipeline.json`` (TRELLIS layout)::

    {"name": <pipeline class>, "args": {"models": {key: "ckpts/<stem>"},
      "sparse_structure_sampler": {"name", "args", "params"}, "slat_sampler": {...},
      "slat_normalization": {"mean": [8], "std": [8]}, "image_cond_model": "dinov2_vitl14_reg"}}

Local folders only. Every failure is a ``PipelineLoadError`` whose message names the file.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, Optional

import torch
import torch.nn as nn

from ..models.checkpoint import CheckpointError, from_pretrained
from .samplers import SAMPLERS

__all__ = ["PipelineLoadError", "read_pipeline_json", "load_models", "build_sampler", "PIPELINE_JSON"]

PIPELINE_JSON = "pipeline.json"


class PipelineLoadError(RuntimeError):
    """A pretrained folder is missing, malformed or does not fit the pipeline."""


def read_pipeline_json(path: str, expected_names: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    """Read ``<path>/pipeline.json`` and check its structure (and class name if given)."""
    if not os.path.isdir(path):
        raise PipelineLoadError(f"{path!r} is not a folder; pipelines load from a local folder "
                                f"containing {PIPELINE_JSON} and ckpts/")
    file = os.path.join(path, PIPELINE_JSON)
    if not os.path.isfile(file):
        raise PipelineLoadError(f"{file} not found: {path!r} is not a pretrained pipeline folder")
    try:
        with open(file, "r", encoding="utf-8") as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PipelineLoadError(f"malformed {file}: {e}") from None
    if not isinstance(config, dict) or "args" not in config or not isinstance(config["args"].get("models"), dict):
        raise PipelineLoadError(f"malformed {file}: expected {{\"name\": ..., \"args\": {{\"models\": {{...}}}}}}")
    if expected_names is not None and config.get("name") not in set(expected_names):
        raise PipelineLoadError(f"{file} describes a {config.get('name')!r} pipeline; expected one of "
                                f"{sorted(set(expected_names))}")
    return config


def load_models(path: str, models: Dict[str, str], required: Iterable[str] = (),
                device: Optional[torch.device] = None, **overrides) -> Dict[str, nn.Module]:
    """Load every ``key -> ckpts/<stem>`` entry; ``required`` keys must be listed."""
    missing = [k for k in required if k not in models]
    if missing:
        raise PipelineLoadError(f"{os.path.join(path, PIPELINE_JSON)} lists no model for {', '.join(missing)}")
    out = {}
    for key, stem in models.items():
        try:
            out[key] = from_pretrained(os.path.join(path, stem), device=device, **overrides)
        except CheckpointError as e:
            raise PipelineLoadError(f"cannot load model {key!r}: {e}") from None
    return out


def build_sampler(spec: Dict[str, Any], source: str):
    """``{"name", "args", "params"}`` -> (sampler, default sample() params)."""
    name = spec.get("name")
    if name not in SAMPLERS:
        raise PipelineLoadError(f"{source}: unknown sampler {name!r}; known: {sorted(SAMPLERS)}")
    return SAMPLERS[name](**spec.get("args", {})), dict(spec.get("params", {}))

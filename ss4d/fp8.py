"""Opt-in FP8 matmuls in the flow trunks (``Pipeline.enable_fp8()``, ``ss4d-generate --fp8``).

torchao's ``quantize_`` with ``Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())``
turns the selected ``nn.Linear`` layers into float8 (e4m3) layers: weights quantised once per output
row, activations quantised per row at every call, the product on the GPU's FP8 tensor cores
(``torch._scaled_mm``), output in the torso dtype (bf16). torchao refuses float8 below CUDA compute
capability 8.9, so this needs an Ada / Hopper (or newer) GPU; it is a CUDA-only extra
(``pip install ss4d[cuda]`` or ``pip install torchao``).

Converted layers (:func:`fp8_layer_names`): the ``nn.Linear`` layers (``SparseLinear`` included)
inside the transformer blocks of the two flow models (:data:`FP8_MODELS`): attention projections
(self ``to_qkv`` / ``to_out``, cross ``to_q`` / ``to_kv`` / ``to_out``) and the MLPs -- the matmuls
that hold almost all the FLOPs. Kept in the torso dtype: the adaLN modulation (a few rows per call,
and it scales every activation), the timestep embedder, the input / output layers and the SLat
flow's convolutional input / output blocks, and any layer whose input or output width is not a
multiple of :data:`FP8_DIM_MULTIPLE` (what the FP8 matmul kernel needs).

Requested but unavailable (no CUDA device, compute capability < 8.9, torchao not installed) is a
bad-input error naming everything that is missing (:func:`fp8_missing`): FP8 changes the numbers, so
it never silently runs in another precision. Quality against bf16: the render PSNR of
``scripts/bench_pipeline.py``'s fp8 row (GPU).
"""
from __future__ import annotations

import importlib.util
from typing import Dict, List, Optional

import torch
from torch import nn

from .errors import InputError

__all__ = ["FP8_MODELS", "FP8_MIN_CAPABILITY", "FP8_DIM_MULTIPLE", "FP8_TRUNK_PREFIX", "FP8_EXCLUDED",
           "FP8_PACKAGE", "fp8_missing", "fp8_layer_names", "check_fp8", "apply_fp8"]

#: Pipeline models whose trunks get FP8 matmuls.
FP8_MODELS = ("sparse_structure_flow_model", "slat_flow_model")
#: Lowest CUDA compute capability with FP8 tensor cores (Ada 8.9, Hopper 9.0).
FP8_MIN_CAPABILITY = (8, 9)
#: Input and output widths of a converted layer must be multiples of this (``torch._scaled_mm``).
FP8_DIM_MULTIPLE = 16
#: Qualified-name prefix of the transformer blocks of both flow models.
FP8_TRUNK_PREFIX = "blocks."
#: Name parts of trunk layers kept in the torso dtype.
FP8_EXCLUDED = ("adaLN_modulation",)
#: The package that provides the FP8 layers.
FP8_PACKAGE = "torchao"
HINT = ("leave --fp8 out, or run on an Ada/Hopper-class GPU (compute capability >= 8.9) with "
        "pip install torchao (or pip install 'ss4d[cuda]')")


def fp8_missing(device: torch.device) -> List[str]:
    """What this machine lacks for FP8 on ``device`` (empty: FP8 can run)."""
    device = torch.device(device)
    missing = []
    if device.type != "cuda":
        missing.append(f"a CUDA GPU with compute capability >= {FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]} "
                       f"(this run is on the {device.type.upper()})")
    else:
        cap = torch.cuda.get_device_capability(device)
        if tuple(cap) < FP8_MIN_CAPABILITY:
            missing.append(f"a GPU with compute capability >= {FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]} "
                           f"({torch.cuda.get_device_name(device)} has {cap[0]}.{cap[1]})")
    if importlib.util.find_spec(FP8_PACKAGE) is None:
        missing.append(f"the {FP8_PACKAGE} package (not installed)")
    return missing


def check_fp8(device: torch.device) -> None:
    """Raise :class:`InputError` naming everything missing for FP8 on ``device``."""
    missing = fp8_missing(device)
    if missing:
        raise InputError(f"--fp8 needs {' and '.join(missing)}", HINT)


def _convertible(name: str, module: nn.Module) -> bool:
    return (isinstance(module, nn.Linear) and name.startswith(FP8_TRUNK_PREFIX)
            and not any(part in name for part in FP8_EXCLUDED)
            and module.in_features % FP8_DIM_MULTIPLE == 0 and module.out_features % FP8_DIM_MULTIPLE == 0)


def fp8_layer_names(model: nn.Module) -> List[str]:
    """Qualified names of the layers of ``model`` that :func:`apply_fp8` converts (see the module
    docstring for the rule)."""
    return [name for name, module in model.named_modules() if _convertible(name, module)]


def apply_fp8(models: Dict[str, nn.Module], device: torch.device,
              config: Optional[object] = None) -> Dict[str, int]:
    """Convert the selected layers of :data:`FP8_MODELS` in ``models`` (already on ``device`` in
    their torso dtype) with torchao; returns the converted layer count per model.

    Raises:
        InputError: FP8 is unavailable here (:func:`check_fp8`).
    """
    check_fp8(device)
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    config = config or Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    counts = {}
    for key in FP8_MODELS:
        names = set(fp8_layer_names(models[key]))
        quantize_(models[key], config, filter_fn=lambda module, fqn, names=names: fqn in names)
        counts[key] = len(names)
    return counts

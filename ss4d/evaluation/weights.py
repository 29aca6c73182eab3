"""Where the evaluation's pretrained networks are found on disk (nothing is ever downloaded).

Every network is looked up in this order: an explicit path (a flag or argument), its own
environment variable, then the weights folder (``--weights DIR``, ``$SS4D_EVAL_WEIGHTS``, default
``checkpoints/eval``) under the documented file names::

    checkpoints/eval/
      vgg16.pth | vgg16-397923af.pth | vgg16.safetensors          torchvision VGG16 state dict (LPIPS-VGG)
      alexnet.pth | alexnet-owt-7be5be79.pth | alexnet.safetensors  torchvision AlexNet state dict (LPIPS-Alex)
      clip-vit-base-patch32/                                      transformers CLIP folder (CLIP-S)
      i3d_torchscript.pt                                          I3D (Kinetics-400) TorchScript (FVD)

The LPIPS linear heads are not needed here: the torchmetrics wheel ships them (``lpips_models/``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..errors import MissingWeightsError

__all__ = ["EVAL_WEIGHTS_ENV", "DEFAULT_WEIGHTS_DIR", "WeightSpec", "WEIGHT_SPECS", "weights_dir", "find_weights",
           "require_weights"]

EVAL_WEIGHTS_ENV = "SS4D_EVAL_WEIGHTS"
DEFAULT_WEIGHTS_DIR = Path("checkpoints") / "eval"
DOC = "docs/evaluation.md (Weights)"


@dataclass(frozen=True)
class WeightSpec:
    """One pretrained network: what it is, its environment variable and its file names in the folder."""

    what: str
    env: str
    names: Sequence[str]


WEIGHT_SPECS = {
    "vgg": WeightSpec("LPIPS-VGG backbone (torchvision VGG16 ImageNet state dict)", "SS4D_VGG16_WEIGHTS",
                      ("vgg16.pth", "vgg16-397923af.pth", "vgg16.safetensors")),
    "alex": WeightSpec("LPIPS-Alex backbone (torchvision AlexNet ImageNet state dict)", "SS4D_ALEXNET_WEIGHTS",
                       ("alexnet.pth", "alexnet-owt-7be5be79.pth", "alexnet.safetensors")),
    "clip": WeightSpec("CLIP-S image encoder (transformers folder of openai/clip-vit-base-patch32)",
                       "SS4D_CLIP_MODEL", ("clip-vit-base-patch32",)),
    "i3d": WeightSpec("FVD I3D network (Kinetics-400 TorchScript)", "SS4D_I3D_WEIGHTS", ("i3d_torchscript.pt",)),
}


def weights_dir(explicit: Optional[str | os.PathLike] = None) -> Path:
    """The weights folder: ``explicit``, else ``$SS4D_EVAL_WEIGHTS``, else ``checkpoints/eval``."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(EVAL_WEIGHTS_ENV) or DEFAULT_WEIGHTS_DIR)


def find_weights(key: str, explicit: Optional[str | os.PathLike] = None,
                 folder: Optional[str | os.PathLike] = None) -> tuple[Optional[Path], str]:
    """``(path or None, what was looked for)`` of the network ``key`` (a :data:`WEIGHT_SPECS` key).

    An explicit path that does not exist is reported as missing (never silently replaced)."""
    spec = WEIGHT_SPECS[key]
    if explicit:
        p = Path(explicit)
        return (p if p.exists() else None), str(p)
    env = os.environ.get(spec.env)
    if env:
        p = Path(env)
        return (p if p.exists() else None), f"${spec.env}={p}"
    root = weights_dir(folder)
    for name in spec.names:
        if (root / name).exists():
            return root / name, str(root / name)
    return None, f"{root}/{{{','.join(spec.names)}}}"


def require_weights(key: str, explicit: Optional[str | os.PathLike] = None,
                    folder: Optional[str | os.PathLike] = None) -> Path:
    """The path of network ``key``, or :class:`MissingWeightsError` saying where it was looked for."""
    path, looked = find_weights(key, explicit, folder)
    if path is None:
        spec = WEIGHT_SPECS[key]
        raise MissingWeightsError(
            f"{spec.what} not found (looked for {looked})",
            f"put the file there, or pass its path (${spec.env} or the weights folder ${EVAL_WEIGHTS_ENV}); "
            f"nothing is downloaded; see {DOC}")
    return path

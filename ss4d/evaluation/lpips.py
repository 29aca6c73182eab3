"""LPIPS (Zhang et al. 2018, v0.1) without torchvision: VGG16 / AlexNet features + the learned heads.

The backbones are written here with torchvision's layer indices (``features.<i>.weight``), so a
torchvision ImageNet state dict (``vgg16-397923af.pth``, ``alexnet-owt-7be5be79.pth``) loads as it
is; the linear heads come from the torchmetrics wheel (``functional/image/lpips_models/<net>.pth``,
byte-identical to the ``lpips`` package's ``weights/v0.1``), or from the ``lpips`` package when it
is installed. Neither network is downloaded: without the backbone :func:`load_lpips` raises
:class:`~ss4d.errors.MissingWeightsError` (``allow_random=True`` builds random weights, for tests).

The computation is the ``lpips`` package's: inputs in [0, 1] mapped to [-1, 1], the fixed
scaling layer, channel-normalised features of five layers (``f / (|f|₂ + 1e-10)``), squared
differences weighted per channel by the 1x1 heads, averaged over space, summed over layers.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Literal, Optional

import torch
import torch.nn as nn

from ..errors import InputError, MissingWeightsError
from .weights import require_weights

__all__ = ["LPIPS", "load_lpips", "LPIPS_NETS", "lpips_heads_path", "LPIPS_SHIFT", "LPIPS_SCALE", "LPIPS_EPS"]

LPIPS_NETS = ("vgg", "alex")
# the scaling layer of lpips v0.1 (ImageNet statistics in the [-1, 1] range)
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_EPS = 1e-10

# torchvision ``features`` layouts: ("conv", in, out, kernel, stride, padding) | ("relu",) | ("pool", kernel, stride)
_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_ALEX_LAYERS = [("conv", 3, 64, 11, 4, 2), ("relu",), ("pool", 3, 2), ("conv", 64, 192, 5, 1, 2), ("relu",),
                ("pool", 3, 2), ("conv", 192, 384, 3, 1, 1), ("relu",), ("conv", 384, 256, 3, 1, 1), ("relu",),
                ("conv", 256, 256, 3, 1, 1), ("relu",)]
# indices (into ``features``) of the ReLU outputs LPIPS compares, and their channels
_TAPS = {"vgg": (3, 8, 15, 22, 29), "alex": (1, 4, 7, 9, 11)}
_CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}
_HEADS_IN_TORCHMETRICS = ("functional", "image", "lpips_models")
_HEADS_IN_LPIPS = ("weights", "v0.1")


def _vgg16_layers() -> list[nn.Module]:
    layers: list[nn.Module] = []
    c_in = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU()]
            c_in = v
    return layers


def _alex_layers() -> list[nn.Module]:
    out: list[nn.Module] = []
    for spec in _ALEX_LAYERS:
        if spec[0] == "conv":
            out.append(nn.Conv2d(spec[1], spec[2], spec[3], stride=spec[4], padding=spec[5]))
        elif spec[0] == "relu":
            out.append(nn.ReLU())
        else:
            out.append(nn.MaxPool2d(spec[1], spec[2]))
    return out


class LPIPS(nn.Module):
    """LPIPS distance: ``forward(pred, gt)`` with images ``[B, 3, H, W]`` in [0, 1] -> ``[B]``.

    Differentiable in its inputs; its own parameters are frozen (``requires_grad=False``) and it
    stays in eval mode. ``features`` holds the backbone with torchvision's indices; ``heads[i]`` is
    the 1x1 conv (no bias) of tap ``i``. Images smaller than about 32 px (VGG) lose the last taps'
    spatial extent; the evaluation uses 512² or 256².
    """

    def __init__(self, net: Literal["vgg", "alex"] = "vgg"):
        super().__init__()
        if net not in LPIPS_NETS:
            raise InputError(f"unknown LPIPS network {net!r}", f"use one of {', '.join(LPIPS_NETS)}")
        self.net = net
        layers = _vgg16_layers() if net == "vgg" else _alex_layers()
        self.taps = _TAPS[net]
        self.features = nn.Sequential(*layers[: self.taps[-1] + 1])
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS[net])
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # always eval: no dropout / batch statistics in a metric
        return super().train(False)

    def tap_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Channel-normalised features of the five taps for images ``[B, 3, H, W]`` in [0, 1]."""
        h = ((2.0 * x - 1.0) - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + LPIPS_EPS))
        return out

    def forward(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        if pred.shape != gt.shape or pred.ndim != 4 or pred.shape[1] != 3:
            raise ValueError(f"LPIPS expects two images [B, 3, H, W] of one shape, got {tuple(pred.shape)} and "
                             f"{tuple(gt.shape)}")
        dtype = self.shift.dtype
        b = pred.shape[0]
        feats = self.tap_features(torch.cat([pred, gt], 0).to(dtype))
        total = 0.0
        for f, head in zip(feats, self.heads):
            fa, fb = f[:b], f[b:]
            total = total + head((fa - fb).pow(2)).mean((1, 2, 3))
        return total


def lpips_heads_path(net: str) -> Optional[Path]:
    """The shipped linear heads ``<net>.pth`` (torchmetrics wheel, else the ``lpips`` package), or None."""
    for package, sub in (("torchmetrics", _HEADS_IN_TORCHMETRICS), ("lpips", _HEADS_IN_LPIPS)):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(list(spec.submodule_search_locations)[0]).joinpath(*sub, f"{net}.pth")
        if path.is_file():
            return path
    return None


def _load_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return sd


def _backbone_state(sd: dict, model: LPIPS, path: Path) -> dict:
    """``features.*`` entries of a torchvision state dict (or one saved without the prefix)."""
    want = model.features.state_dict()
    out = {}
    for k in want:
        for key in (f"features.{k}", k, f"net.features.{k}"):
            if key in sd:
                out[k] = sd[key]
                break
        else:
            raise InputError(f"{path} is not a torchvision {'VGG16' if model.net == 'vgg' else 'AlexNet'} state dict "
                             f"(no 'features.{k}')", "pass the ImageNet weights file of that network")
        if tuple(out[k].shape) != tuple(want[k].shape):
            raise InputError(f"{path}: features.{k} has shape {tuple(out[k].shape)}, expected {tuple(want[k].shape)}",
                             f"pass the torchvision {model.net} ImageNet weights")
    return out


def _heads_state(sd: dict, model: LPIPS, path: Path) -> dict:
    """``lin<i>.model.<j>.weight`` (lpips / torchmetrics) -> ``heads.<i>.weight``."""
    out = {}
    for i, head in enumerate(model.heads):
        keys = [k for k in sd if k.startswith(f"lin{i}.") and k.endswith("weight")]
        if len(keys) != 1 or tuple(sd[keys[0]].shape) != tuple(head.weight.shape):
            raise InputError(f"{path} is not an LPIPS v0.1 {model.net} heads file (lin{i})",
                             "pass the lpips/torchmetrics '<net>.pth' heads")
        out[f"{i}.weight"] = sd[keys[0]]
    return out


def load_lpips(net: Literal["vgg", "alex"] = "vgg", backbone_weights: Optional[str | os.PathLike] = None,
               heads: Optional[str | os.PathLike] = None, weights_folder: Optional[str | os.PathLike] = None,
               allow_random: bool = False, device: Optional[torch.device | str] = None,
               seed: int = 0) -> LPIPS:
    """An :class:`LPIPS` module with pretrained weights, frozen, in eval mode, on ``device``.

    ``backbone_weights``: the torchvision ImageNet state dict of the backbone (``.pth`` or
    ``.safetensors``); None looks it up (``$SS4D_VGG16_WEIGHTS`` / ``$SS4D_ALEXNET_WEIGHTS``, then the
    weights folder, see :mod:`ss4d.evaluation.weights`). ``heads``: the lpips v0.1 heads file; None
    uses the shipped one. Missing weights raise :class:`MissingWeightsError` unless ``allow_random``
    (tests only: a random backbone/heads drawn from ``seed``; never report such numbers).
    """
    model = LPIPS(net)
    try:
        path = require_weights(net, backbone_weights, weights_folder)
    except MissingWeightsError:
        if not allow_random or backbone_weights is not None:
            raise
        path = None
    if path is not None:
        model.features.load_state_dict(_backbone_state(_load_state_dict(path), model, path))
    else:
        _randomise(model.features, seed)
    heads_path = Path(heads) if heads else lpips_heads_path(net)
    if heads_path is not None and heads_path.is_file():
        model.heads.load_state_dict(_heads_state(_load_state_dict(heads_path), model, heads_path))
    elif heads is not None or not allow_random:
        raise MissingWeightsError(f"LPIPS {net} linear heads not found ({heads or 'torchmetrics/lpips wheel'})",
                                  "install torchmetrics (the 'eval' extra) or pass the heads file")
    else:
        _randomise(model.heads, seed + 1, positive=True)
    return model.to(device) if device is not None else model


def _randomise(module: nn.Module, seed: int, positive: bool = False) -> None:
    """Deterministic random weights (He-normal convs, zero biases; non-negative for heads, like LPIPS')."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight[0].numel()
            w = torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5
            m.weight.data.copy_(w.abs() if positive else w)
            if m.bias is not None:
                m.bias.data.zero_()


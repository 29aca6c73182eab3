"""Finding the condition encoder of a pipeline folder (local files only, never downloads).

``pipeline.json``'s ``image_cond_model`` names the encoder (``"dinov2_vitl14_reg"`` in the official
folders, which TRELLIS/SS4D fetch with ``torch.hub`` at run time). We look, in order, at:

1. an explicit ``override`` (a path, an encoder object, or ``"tiny-random"`` / ``"random-vitl14-reg"`` /
   ``"small-sincos"``);
2. ``<folder>/image_cond_model.safetensors``: the tiny patch-embed stand-in (keys ``patch_embed.*``,
   ``prefix_tokens``, ``pos_embed``) or a DINOv2 hub checkpoint converted to safetensors;
3. ``<folder>/image_cond_model/``: a transformers ``Dinov2WithRegistersModel`` folder
   (``config.json`` + weights) or a folder holding one hub checkpoint (``.pth``);
4. ``image_cond_model`` itself when it is a path (relative to the folder or absolute);
5. ``$SS4D_DINOV2`` (a path as in 3.);
6. torch.hub's cache: ``$TORCH_HOME/hub/checkpoints/dinov2_vitl14_reg4_pretrain.pth``
   (``~/.cache/torch`` by default), where ``torch.hub.load`` would have put it.

Nothing found -> :class:`~ss4d.errors.ModelFolderError` saying where to put the weights.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple, Union

from torch import nn

from ..errors import ModelFolderError
from .dinov2 import DINOV2_NAME, FULL_RANDOM_NAME, SMALL_SINCOS_NAME, TINY_RANDOM_NAME, load_dinov2
from .patch_embed import PatchEmbedEncoder, is_patch_embed_state_dict

__all__ = ["load_condition_encoder", "find_condition_encoder", "ENCODER_FILE", "ENCODER_DIR", "DINOV2_ENV",
           "HUB_CHECKPOINT", "RANDOM_NAMES"]

ENCODER_FILE = "image_cond_model.safetensors"
ENCODER_DIR = "image_cond_model"
DINOV2_ENV = "SS4D_DINOV2"
HUB_CHECKPOINT = "dinov2_vitl14_reg4_pretrain.pth"
#: Encoders made here from a seed (no weights to find): a model folder of a run conditioned on one stores it.
RANDOM_NAMES = (TINY_RANDOM_NAME, FULL_RANDOM_NAME, SMALL_SINCOS_NAME)


def _hub_cache() -> Path:
    torch_home = os.environ.get("TORCH_HOME", os.path.join(os.path.expanduser("~"), ".cache", "torch"))
    return Path(torch_home) / "hub" / "checkpoints" / HUB_CHECKPOINT


def find_condition_encoder(folder: Union[str, Path], name: Optional[str] = None) -> Optional[Path]:
    """The first local source (steps 2-6 of the module docstring), or None."""
    folder = Path(folder)
    candidates = [folder / ENCODER_FILE, folder / ENCODER_DIR]
    if name and name not in RANDOM_NAMES:
        candidates += [folder / name, Path(name)]
    if os.environ.get(DINOV2_ENV):
        candidates.append(Path(os.environ[DINOV2_ENV]))
    candidates.append(_hub_cache())
    for c in candidates:
        if c.is_file() or (c.is_dir() and any(c.iterdir())):
            return c
    return None


def _load_path(path: Path, device, dtype) -> nn.Module:
    if path.is_file() and path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            keys = set(f.keys())
        if is_patch_embed_state_dict(dict.fromkeys(keys)):
            return PatchEmbedEncoder.from_file(path, name="patch_embed").to(device=device, dtype=dtype)
    return load_dinov2(path, device=device, dtype=dtype)


def load_condition_encoder(folder: Union[str, Path], name: Optional[str] = None,
                           override: Union[None, str, os.PathLike, nn.Module] = None,
                           device="cpu", dtype=None) -> Tuple[nn.Module, str]:
    """(encoder, where it came from). See the module docstring for the search order."""
    import torch

    dtype = dtype or torch.float32
    if isinstance(override, nn.Module):
        return override.to(device=device, dtype=dtype), "given"
    if override is not None:
        src = str(override)
        if src in RANDOM_NAMES:
            return load_dinov2(src, device=device, dtype=dtype), src
        path = Path(src)
        if not path.exists():
            raise ModelFolderError(f"condition encoder not found: {path}",
                                   "give a DINOv2 folder/checkpoint (see checkpoints/README.md)")
        source = path
    else:
        source = find_condition_encoder(folder, name)
        if source is None:
            raise ModelFolderError(
                f"the condition encoder {name or DINOV2_NAME!r} (DINOv2 ViT-L/14 with registers) is not "
                f"available locally",
                f"put it in {Path(folder) / ENCODER_DIR}/ (a transformers folder of "
                f"facebook/dinov2-with-registers-large, or torch.hub's {HUB_CHECKPOINT}), set ${DINOV2_ENV}, or "
                f"pass --dinov2 PATH; see checkpoints/README.md")
    try:
        return _load_path(source, device, dtype), str(source)
    except ModelFolderError:
        raise
    except Exception as e:
        raise ModelFolderError(f"cannot load the condition encoder from {source} ({type(e).__name__}: {e})",
                               "give a DINOv2-with-registers folder or checkpoint (see checkpoints/README.md)") from None

"""TRELLIS-format checkpoints: ``<stem>.json`` ({"name", "args"}) + ``<stem>.safetensors``.

Loading is strict: a missing, unexpected or mis-shaped key raises ``CheckpointError`` naming
the keys, the file and the model class. Only safetensors are read (never pickle).
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from ..atomic import apply_umask, sweep_stale_temps, temp_prefix
from .registry import UnknownModelError, get_model_class

__all__ = ["CheckpointError", "from_pretrained", "save_pretrained", "load_config",
           "build_model", "load_state_dict_strict", "resolve_stem"]

MAX_KEYS_LISTED = 12  # how many offending keys an error message spells out
PICKLE_EXTENSIONS = (".pt", ".pth", ".bin", ".ckpt")  # torch.save checkpoints: named, never loaded


class CheckpointError(RuntimeError):
    """A checkpoint could not be loaded; the message says which file, class and keys."""


def resolve_stem(path: str) -> str:
    """Accept ``stem``, ``stem.json`` or ``stem.safetensors``; return the stem."""
    for ext in (".json", ".safetensors"):
        if path.endswith(ext):
            return path[: -len(ext)]
    return path


def load_config(path: str) -> Dict[str, Any]:
    """Read and validate ``<stem>.json``."""
    stem = resolve_stem(path)
    json_path = stem + ".json"
    if not os.path.isfile(json_path):
        raise CheckpointError(f"model config not found: {json_path} (expected <name>.json next to <name>.safetensors)")
    try:
        with open(json_path, "r", encoding="utf-8") as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"malformed model config {json_path}: {e}") from None
    if not isinstance(config, dict) or not isinstance(config.get("name"), str) \
            or not isinstance(config.get("args", {}), dict):
        raise CheckpointError(
            f"malformed model config {json_path}: expected {{\"name\": <class>, \"args\": {{...}}}}"
        )
    config.setdefault("args", {})
    return config


def build_model(config: Dict[str, Any], source: str = "<config>", **overrides) -> nn.Module:
    """Instantiate the class named in ``config`` with its args (``overrides`` win)."""
    try:
        cls = get_model_class(config["name"], config.get("args", {}))
    except UnknownModelError as e:
        raise CheckpointError(f"{source}: {e}") from None
    args = dict(config.get("args", {}))
    args.update(overrides)
    try:
        return cls(**args)
    except TypeError as e:
        raise CheckpointError(f"{source}: cannot build {cls.__name__} from its args: {e}") from None


def _fmt_keys(keys) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - MAX_KEYS_LISTED} more)" if len(keys) > MAX_KEYS_LISTED else ""
    return ", ".join(keys[:MAX_KEYS_LISTED]) + more


def load_state_dict_strict(model: nn.Module, state_dict: Dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state_dict`` into ``model``; every key must exist with the same shape.

    Values are cast to the parameter's dtype (fp16 torsos load fp32 files and vice versa).
    """
    own = model.state_dict()
    cls = type(model).__name__
    missing = set(own) - set(state_dict)
    unexpected = set(state_dict) - set(own)
    wrong = [k for k in set(own) & set(state_dict) if tuple(own[k].shape) != tuple(state_dict[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_fmt_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_fmt_keys(unexpected)}")
    if wrong:
        problems.append("shape mismatch: " + ", ".join(
            f"{k} (checkpoint {list(state_dict[k].shape)} vs model {list(own[k].shape)})"
            for k in sorted(wrong)[:MAX_KEYS_LISTED]))
    if problems:
        raise CheckpointError(f"{source} does not fit {cls}: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)


def _read_safetensors(path: str) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        stem = os.path.splitext(path)[0]
        pickled = [stem + ext for ext in PICKLE_EXTENSIONS if os.path.isfile(stem + ext)]
        if pickled:
            raise CheckpointError(f"{pickled[0]} is a pickle checkpoint, but only safetensors are read (pickle can "
                                  f"run code); convert it to {path} with safetensors.torch.save_file")
        raise CheckpointError(f"weights not found: {path}")
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises SafetensorError / OSError on truncated files
        raise CheckpointError(f"cannot read weights {path} (truncated or not a safetensors file): {e}") from None


def from_pretrained(path: str, device: Optional[torch.device] = None, **overrides) -> nn.Module:
    """Build and load a model from ``<path>.json`` + ``<path>.safetensors`` (local only).

    ``overrides`` replace constructor args (e.g. ``use_fp16=False`` for CPU). Returns the model
    in eval mode.
    """
    stem = resolve_stem(path)
    config = load_config(stem)
    model = build_model(config, source=stem + ".json", **overrides)
    weights = stem + ".safetensors"
    load_state_dict_strict(model, _read_safetensors(weights), source=weights)
    if device is not None:
        model = model.to(device)
    return model.eval()


def save_pretrained(model: nn.Module, path: str, name: Optional[str] = None,
                    args: Optional[Dict[str, Any]] = None) -> Tuple[str, str]:
    """Write ``<path>.json`` + ``<path>.safetensors`` (the inverse of ``from_pretrained``).

    The model must know its constructor args (``model.config`` / ``model.init_args``) unless
    ``args`` is given. Files are written atomically.
    """
    from safetensors.torch import save_file

    stem = resolve_stem(path)
    if args is None:
        args = getattr(model, "init_args", None)
        if args is None:
            raise CheckpointError(f"{type(model).__name__} does not record its constructor args; pass args=")
    config = {"name": name or type(model).__name__, "args": args}
    directory = os.path.dirname(os.path.abspath(stem))
    os.makedirs(directory, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    sweep_stale_temps(directory)
    with tempfile.TemporaryDirectory(dir=directory, prefix=temp_prefix(f".{os.path.basename(stem)}.")) as tmp:
        tmp_json = os.path.join(tmp, "model.json")
        tmp_st = os.path.join(tmp, "model.safetensors")
        with open(tmp_json, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=4)
        save_file(state, tmp_st)
        apply_umask(tmp_st)  # save_file creates 0600 files
        os.replace(tmp_st, stem + ".safetensors")
        os.replace(tmp_json, stem + ".json")
    return stem + ".json", stem + ".safetensors"

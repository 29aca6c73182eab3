"""Name -> model class registry (TRELLIS's checkpoint JSON names a class by string).

TRELLIS's training configs name ``Elastic*`` classes; the released JSONs name the plain ones.
Both resolve here (the Elastic variants only add training-time activation checkpointing, which
our models expose through ``use_checkpoint``). ``ss4d`` registers its 4D classes with
``register_model`` so one ``from_pretrained`` loads both families.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

import torch.nn as nn

__all__ = ["register_model", "register_variant", "get_model_class", "known_model_names", "UnknownModelError"]

# name -> (module path, attribute). Resolved lazily so importing the registry stays cheap.
_LAZY: Dict[str, Tuple[str, str]] = {
    "SparseStructureEncoder": ("trellis_ext.models.sparse_structure_vae", "SparseStructureEncoder"),
    "SparseStructureDecoder": ("trellis_ext.models.sparse_structure_vae", "SparseStructureDecoder"),
    "SparseStructureFlowModel": ("trellis_ext.models.sparse_structure_flow", "SparseStructureFlowModel"),
    "SLatEncoder": ("trellis_ext.models.structured_latent_vae.encoder", "SLatEncoder"),
    "SLatGaussianDecoder": ("trellis_ext.models.structured_latent_vae.decoder_gs", "SLatGaussianDecoder"),
    "SLatRadianceFieldDecoder": ("trellis_ext.models.structured_latent_vae.decoder_rf", "SLatRadianceFieldDecoder"),
    "SLatMeshDecoder": ("trellis_ext.models.structured_latent_vae.decoder_mesh", "SLatMeshDecoder"),
    "SLatFlowModel": ("trellis_ext.models.structured_latent_flow", "SLatFlowModel"),
}
ELASTIC_PREFIX = "Elastic"
_REGISTERED: Dict[str, Type[nn.Module]] = {}
# name -> [(predicate(args) -> bool, (module, attr))]: a checkpoint JSON may reuse a class name with
# args that select another implementation (SS4D's 4D decoder is saved as "SLatGaussianDecoder" with
# pe_mode="rope_t" / expand_self_attn=true). Variants are tried before the plain class.
_VARIANTS: Dict[str, List[Tuple[Callable[[Dict[str, Any]], bool], Tuple[str, str]]]] = {}


class UnknownModelError(KeyError):
    """The checkpoint names a class this package does not know."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return self.args[0]


def register_model(name: str, cls: Type[nn.Module] = None, *, lazy: Tuple[str, str] = None):
    """Register ``cls`` (or a lazy ``(module, attr)``) under ``name``. Usable as a decorator."""
    if lazy is not None:
        _LAZY[name] = lazy
        return None
    if cls is None:
        def deco(c):
            _REGISTERED[name] = c
            return c
        return deco
    _REGISTERED[name] = cls
    return cls


def register_variant(name: str, predicate: Callable[[Dict[str, Any]], bool], lazy: Tuple[str, str]) -> None:
    """Resolve ``name`` to ``lazy`` = (module, attr) when ``predicate(args)`` holds."""
    _VARIANTS.setdefault(name, []).append((predicate, lazy))


def known_model_names():
    names = set(_LAZY) | set(_REGISTERED)
    return sorted(names | {ELASTIC_PREFIX + n for n in names})


def get_model_class(name: str, args: Optional[Dict[str, Any]] = None) -> Type[nn.Module]:
    """Resolve a class name from a checkpoint JSON (``Elastic*`` aliases accepted).

    ``args`` (the JSON's constructor args) select a registered variant when one matches.
    """
    base = name[len(ELASTIC_PREFIX):] if name.startswith(ELASTIC_PREFIX) and name not in _REGISTERED \
        and name not in _LAZY and name not in _VARIANTS else name
    for predicate, (module, attr) in _VARIANTS.get(base, []):
        if args is not None and predicate(args):
            return getattr(importlib.import_module(module), attr)
    if base in _REGISTERED:
        return _REGISTERED[base]
    if base in _LAZY:
        module, attr = _LAZY[base]
        cls = getattr(importlib.import_module(module), attr)
        _REGISTERED[base] = cls
        return cls
    raise UnknownModelError(
        f"unknown model class {name!r}; known classes: {', '.join(known_model_names())}"
    )

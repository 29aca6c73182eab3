"""TRELLIS-compatible model classes and checkpoint I/O.

``from_pretrained(path)`` reads ``<path>.json`` + ``<path>.safetensors`` (TRELLIS's layout) and
dispatches on the class name in the JSON (``Elastic*`` aliases accepted).
"""
from .checkpoint import CheckpointError, build_model, from_pretrained, load_config, load_state_dict_strict, \
    save_pretrained
from .registry import UnknownModelError, get_model_class, known_model_names, register_model

__all__ = ["CheckpointError", "build_model", "from_pretrained", "load_config", "load_state_dict_strict",
           "save_pretrained", "UnknownModelError", "get_model_class", "known_model_names", "register_model"]


def __getattr__(name):
    # lazy access to the model classes: trellis_ext.models.SLatFlowModel etc.
    try:
        return get_model_class(name)
    except UnknownModelError:
        raise AttributeError(name) from None

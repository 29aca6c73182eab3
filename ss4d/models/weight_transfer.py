"""Loading TRELLIS weights into a 4D model (shared by every ``inflate_*`` function)."""
from __future__ import annotations

from typing import Any, Callable, Dict, Type

import torch.nn as nn

from trellis_ext.models import CheckpointError

__all__ = ["build_inflated", "load_trellis_weights"]

MAX_KEYS_LISTED = 8


def load_trellis_weights(model4d: nn.Module, trellis_model: nn.Module, is_new_key: Callable[[str], bool]) -> None:
    """Copy every TRELLIS tensor into ``model4d`` on its unchanged key.

    Strict on TRELLIS's keys: each must exist in the 4D model with the same shape, and the only 4D keys
    left unloaded are those ``is_new_key`` accepts (the temporal parameters, which keep their init).
    Raises ``CheckpointError`` naming the offending keys.
    """
    source, own = trellis_model.state_dict(), model4d.state_dict()
    unexpected = sorted(set(source) - set(own))
    wrong = sorted(k for k in set(source) & set(own) if own[k].shape != source[k].shape)
    missing = sorted(k for k in set(own) - set(source) if not is_new_key(k))
    if unexpected or wrong or missing:
        raise CheckpointError(
            f"{type(trellis_model).__name__} does not fit {type(model4d).__name__}: "
            f"unexpected {unexpected[:MAX_KEYS_LISTED]}, shape mismatch {wrong[:MAX_KEYS_LISTED]}, "
            f"missing non-temporal {missing[:MAX_KEYS_LISTED]}")
    model4d.load_state_dict(source, strict=False)  # strict on TRELLIS's keys by the checks above


def build_inflated(trellis_model: nn.Module, cls: Type[nn.Module], four_d_args: Dict[str, Any],
                   is_new_key: Callable[[str], bool] = lambda key: False) -> nn.Module:
    """``cls(**trellis args, **four_d_args)`` on the TRELLIS model's device, torso dtype and train/eval
    mode, holding every TRELLIS weight (see ``load_trellis_weights``)."""
    args = getattr(trellis_model, "init_args", None)
    if not args:
        raise ValueError(f"cannot inflate {type(trellis_model).__name__}: it records no constructor args "
                         "(build it through trellis_ext.models)")
    ref = next(trellis_model.parameters(), None)
    model = cls(**{**args, **four_d_args})
    if ref is not None:
        model = model.to(ref.device)
    if hasattr(model, "convert_torso") and hasattr(trellis_model, "dtype"):
        model.convert_torso(trellis_model.dtype)
    load_trellis_weights(model, trellis_model, is_new_key)
    return model.train(trellis_model.training)

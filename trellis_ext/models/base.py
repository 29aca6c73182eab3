"""Shared model plumbing: recording constructor args and converting the torso's dtype."""
from __future__ import annotations

import inspect
from typing import Any, Dict, Iterable, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules.fp16 import convert_module_to, zero_module
from ..sparse.tensor import SparseTensor

__all__ = ["TrellisModel", "xavier_init_linears", "zero_module", "init_flow_transformer", "output_norm"]

T_EMBEDDER_INIT_STD = 0.02  # TRELLIS draws the timestep-MLP weights from N(0, 0.02²)


def xavier_init_linears(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every nn.Linear below ``module`` (TRELLIS's init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def init_timestep_embedder(t_embedder: nn.Module) -> None:
    for m in t_embedder.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=T_EMBEDDER_INIT_STD)


def init_flow_transformer(model: nn.Module) -> None:
    """TRELLIS's flow-model init: xavier Linears, N(0, 0.02) timestep MLP, zero adaLN outputs and a
    zero ``out_layer`` (every block starts as the identity and the model predicts zero velocity)."""
    xavier_init_linears(model)
    init_timestep_embedder(model.t_embedder)
    if getattr(model, "share_mod", False):
        zero_module(model.adaLN_modulation[-1])
    for block in model.blocks:
        if hasattr(block, "adaLN_modulation"):
            zero_module(block.adaLN_modulation[-1])
    zero_module(model.out_layer)


def output_norm(h: Union[torch.Tensor, SparseTensor]) -> Union[torch.Tensor, SparseTensor]:
    """TRELLIS's non-affine layer norm before ``out_layer`` (default eps), over the last dim of a
    dense tensor or of a ``SparseTensor``'s feats."""
    if isinstance(h, SparseTensor):
        return h.replace(F.layer_norm(h.feats, h.feats.shape[-1:]))
    return F.layer_norm(h, h.shape[-1:])


class TrellisModel(nn.Module):
    """Base of every model: remembers ``init_args`` (for ``save_pretrained``) and the torso.

    Subclasses list the sub-modules TRELLIS converts to half precision in ``TORSO`` and call
    ``self._finish_init(use_fp16)`` at the end of ``__init__``. ``self.dtype`` is the torso dtype
    that activations are cast to inside ``forward``.
    """

    TORSO: Iterable[str] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        def wrapped(self, *args, __init=init, **kw):
            if not hasattr(self, "_init_args_recorded"):
                bound = inspect.signature(__init).bind(self, *args, **kw)
                params = dict(bound.arguments)
                params.pop("self", None)
                extra = params.pop("kwargs", {}) if "kwargs" in inspect.signature(__init).parameters else {}
                params.update(extra)
                object.__setattr__(self, "_init_args_recorded", params)
            __init(self, *args, **kw)

        wrapped.__signature__ = inspect.signature(init)
        wrapped.__doc__ = init.__doc__
        cls.__init__ = wrapped

    @property
    def init_args(self) -> Dict[str, Any]:
        return dict(getattr(self, "_init_args_recorded", {}))

    def _finish_init(self, use_fp16: bool) -> None:
        self.dtype = torch.float32
        if use_fp16:
            self.convert_torso(torch.float16)

    def convert_torso(self, dtype: torch.dtype) -> "TrellisModel":
        """Cast the torso (``TORSO`` sub-modules) to ``dtype`` (fp16/bf16/fp32), as TRELLIS does
        for fp16; norms and embedders stay fp32."""
        for name in self.TORSO:
            module = getattr(self, name, None)
            if module is not None:
                convert_module_to(module, dtype)
        self.dtype = dtype
        return self

    def convert_to_fp16(self) -> "TrellisModel":
        return self.convert_torso(torch.float16)

    def convert_to_fp32(self) -> "TrellisModel":
        return self.convert_torso(torch.float32)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

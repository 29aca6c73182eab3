"""Cache of cross-attention keys/values across sampler steps.

The keys and values of a cross-attention layer are ``to_kv(context)``: they depend on the condition
tokens only, not on the noisy input or the time step, so a sampler that calls the model 25-50 times
with the same condition recomputes them every time. Inside :func:`cross_attention_kv_cache` each
attention module keeps the k, v of the last :data:`ENTRIES_PER_MODULE` contexts it saw (the
condition and the negative condition of CFG, or their batched concatenation) and returns them
when it sees an equal context again.

A hit needs the same shape, dtype and device and equal values (``torch.equal``; the cached context
tensor is held, so the check never compares against freed memory). Only no-grad calls are cached
(training needs the graph). Cached results are the very tensors computed the first time, so a
cached run equals a recomputed one exactly.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch

__all__ = ["cross_attention_kv_cache", "cached_kv", "kv_cache_active", "ENTRIES_PER_MODULE"]

#: Contexts remembered per attention module (cond + neg_cond, or one batched pair, plus one spare).
ENTRIES_PER_MODULE = 3

_Entry = Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]
_cache: Optional[Dict[int, List[_Entry]]] = None


@contextlib.contextmanager
def cross_attention_kv_cache() -> Iterator[Dict[int, List[_Entry]]]:
    """Cache cross-attention k, v inside the block (nested blocks share the outer cache)."""
    global _cache
    if _cache is not None:
        yield _cache
        return
    _cache = {}
    try:
        yield _cache
    finally:
        _cache = None


def kv_cache_active() -> bool:
    return _cache is not None


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a is b:
        return True
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)


def cached_kv(owner: torch.nn.Module, context: torch.Tensor,
              compute: Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``compute(context)``, or the k, v that ``owner`` computed before for an equal context."""
    if _cache is None or torch.is_grad_enabled():
        return compute(context)
    entries = _cache.setdefault(id(owner), [])
    for i, (ctx, kv) in enumerate(entries):
        if _same(ctx, context):
            entries.append(entries.pop(i))   # most recently used last
            return kv
    kv = compute(context)
    entries.append((context, kv))
    if len(entries) > ENTRIES_PER_MODULE:
        entries.pop(0)
    return kv

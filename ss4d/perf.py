"""Measuring what a generation costs: FLOPs, wall time, peak memory, the matmul ceiling.

Used by ``scripts/bench_pipeline.py`` (the GPU performance table of the README) and its tests.

* :func:`count_flops` -- FLOPs of one call with ``torch.utils.flop_counter.FlopCounterMode``
  (matmuls, convolutions and the SDPA kernels it knows; element-wise work is not counted, which is
  the convention of every "fraction of peak" figure). Attention is counted through the SDPA backend
  (``ATTN_BACKEND=sdpa`` while counting), since the counter does not know the varlen / flash
  library kernels; variable-length attention then runs as padded buckets, so its count includes
  the padding (an overcount of at most the bucket padding).
* :class:`StageMeter` -- wall time of a region (CUDA events on CUDA, ``perf_counter`` elsewhere)
  and its peak memory (``max_memory_allocated`` / ``max_memory_reserved`` on CUDA; the process's
  peak resident set on CPU, reset per region through ``/proc/self/clear_refs`` on Linux).
* :func:`matmul_ceiling` -- the measured dense matmul rate (TFLOP/s) of a device and dtype: the
  ceiling that achieved rates are reported against (datasheet peaks are leads only).
* :class:`CallCounter` -- counts a module's forward calls (model evaluations per sampler run).
* :class:`PassCounter` -- also the passes those calls hold (a batched-CFG call is two: the
  conditional and the unconditional one), which is what a flow stage's compute scales with.
"""
from __future__ import annotations

import contextlib
import os
import resource
import statistics
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["count_flops", "StageMeter", "matmul_ceiling", "CallCounter", "PassCounter", "env_override",
           "format_table",
           "MATMUL_FLOPS_PER_MAC", "CEILING_SIZE", "CEILING_REPEATS"]

#: A multiply-add counts as two floating-point operations.
MATMUL_FLOPS_PER_MAC = 2
#: Square matmul size for the ceiling on CUDA (8192³ bf16: ~1.1 TFLOP per product, ~1.5 ms on an H100).
CEILING_SIZE = 8192
#: Timed products (after as many warm-up ones) whose median gives the ceiling.
CEILING_REPEATS = 20
#: ``/proc/self/clear_refs`` value that resets the peak resident set (VmHWM).
CLEAR_PEAK_RSS = "5"


@contextlib.contextmanager
def env_override(name: str, value: str) -> Iterator[None]:
    """Set an environment variable inside the block, restore it after."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def count_flops(fn: Callable[..., Any], *args, attention_backend: Optional[str] = "sdpa",
                **kwargs) -> Tuple[Any, int, Dict[str, int]]:
    """Run ``fn(*args, **kwargs)`` once under ``FlopCounterMode``.

    Returns:
        (result, total FLOPs, FLOPs per aten op name). ``attention_backend`` (default ``"sdpa"``)
        is forced through ``ATTN_BACKEND`` while counting so that attention is seen by the counter
        (``None`` leaves the backend choice alone).
    """
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa(q_shape, k_shape, v_shape, *_args, **_kwargs) -> int:
        return sdpa_flop_count(q_shape, k_shape, v_shape)

    # torch's table knows the CUDA SDPA kernels; the CPU flash kernel is counted with the same formula
    extra = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}
    ctx = env_override("ATTN_BACKEND", attention_backend) if attention_backend else contextlib.nullcontext()
    with ctx, FlopCounterMode(display=False, custom_mapping=extra) as counter:
        result = fn(*args, **kwargs)
    per_op: Dict[str, int] = {}
    for _module, ops in counter.get_flop_counts().items():
        if _module != "Global":
            continue
        for op, n in ops.items():
            per_op[str(op).removeprefix("aten.")] = int(n)
    return result, int(counter.get_total_flops()), per_op


def _peak_rss() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class StageMeter:
    """Wall time and peak memory of the ``with`` block on ``device``.

    After the block: ``seconds``; ``peak`` (bytes: ``max_memory_allocated`` on CUDA, peak RSS on
    CPU) and ``reserved`` (``max_memory_reserved`` on CUDA, = ``peak`` on CPU). On CUDA the time is
    taken with events recorded on the current stream (the block's host time is not what is measured).
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.seconds = float("nan")
        self.peak = self.reserved = 0

    def __enter__(self) -> "StageMeter":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write(CLEAR_PEAK_RSS)
            except OSError:
                pass
            self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> bool:
        if self.device.type == "cuda":
            self._end.record()
            torch.cuda.synchronize(self.device)
            self.seconds = self._start.elapsed_time(self._end) / 1000.0
            self.peak = int(torch.cuda.max_memory_allocated(self.device))
            self.reserved = int(torch.cuda.max_memory_reserved(self.device))
        else:
            self.seconds = time.perf_counter() - self._t0
            self.peak = self.reserved = _peak_rss()
        return False


def matmul_ceiling(device: torch.device, dtype: torch.dtype = torch.bfloat16, size: int = CEILING_SIZE,
                   repeats: int = CEILING_REPEATS) -> float:
    """Measured TFLOP/s of a ``size``³ matmul on random data (median of ``repeats`` after warm-up).

    Three input pairs are rotated so that repeated products do not just re-read a cached operand.
    """
    device = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    pairs = [(torch.randn(size, size, generator=gen).to(device, dtype),
              torch.randn(size, size, generator=gen).to(device, dtype)) for _ in range(3)]
    flops = MATMUL_FLOPS_PER_MAC * size ** 3
    times: List[float] = []
    for i in range(2 * repeats):
        a, b = pairs[i % len(pairs)]
        with StageMeter(device) as m:
            torch.matmul(a, b)
        if i >= repeats:
            times.append(m.seconds)
    return flops / statistics.median(times) / 1e12


class CallCounter:
    """Counts forward calls of ``module`` inside the ``with`` block (``calls`` afterwards)."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.calls = 0

    def _hook(self, *_):
        self.calls += 1

    def __enter__(self) -> "CallCounter":
        self._handle = self.module.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc) -> bool:
        self._handle.remove()
        return False


class PassCounter(CallCounter):
    """:class:`CallCounter` of a flow model called as ``model(x, t, cond, ...)`` that also counts
    passes: ``passes`` = the condition rows seen / ``rows_per_pass`` (the rows of one pass, e.g. the
    frame count T: a batched-CFG call on ``[cond; neg]`` holds 2T rows, two passes)."""

    def __init__(self, module: nn.Module, rows_per_pass: int):
        super().__init__(module)
        self.rows_per_pass = rows_per_pass
        self.rows = 0

    def _hook(self, _module, args, kwargs):
        cond = args[2] if len(args) > 2 else kwargs["cond"]
        self.calls += 1
        self.rows += int(cond.shape[0])

    def __enter__(self) -> "PassCounter":
        self._handle = self.module.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    @property
    def passes(self) -> float:
        return self.rows / self.rows_per_pass


def format_table(rows: Sequence[Dict[str, Any]], columns: Sequence[Tuple[str, str, str]]) -> str:
    """One fixed-width text table: ``columns`` = (key, header, format spec); missing keys print ``-``."""
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        cells.append([("-" if row.get(k) is None else format(row[k], spec)) for k, _, spec in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

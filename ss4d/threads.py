"""The default number of CPU threads for torch.

torch's own default is every logical core. On a shared machine whose cores are already busy (CI
runners, small cloud VMs, a laptop compiling something) that oversubscribes them and OpenMP's
spinning threads slow generation down several-fold (``scripts/bench_pipeline.py`` measures it).
:func:`default_threads` takes the physical cores this process may run on, minus the ones other
processes keep busy (the 1-minute load average), at least 1. An explicit ``OMP_NUM_THREADS`` wins.
Tiny random-weight test pipelines use :data:`TINY_MODEL_THREADS`: their kernels are too small to
gain from more threads.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

__all__ = ["default_threads", "TINY_MODEL_THREADS"]

TINY_MODEL_THREADS = 1
THREADS_ENV = "OMP_NUM_THREADS"


def _usable_logical_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _physical_fraction() -> float:
    """Physical / logical cores of the machine (0.5 with hyper-threading; 1.0 when unknown)."""
    try:
        import psutil

        physical, logical = psutil.cpu_count(logical=False), psutil.cpu_count(logical=True)
    except Exception:  # noqa: BLE001  (psutil missing or unable to tell)
        return 1.0
    return physical / logical if physical and logical else 1.0


def _busy_cores() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def default_threads(cores: Optional[Callable[[], int]] = None, physical_fraction: Optional[Callable[[], float]] = None,
                    busy: Optional[Callable[[], float]] = None) -> int:
    """Threads to use when the user did not say (see the module docstring).

    The three callables replace the machine probes (for tests and the benchmark)."""
    env = os.environ.get(THREADS_ENV, "")
    if env.isdigit() and int(env) >= 1:
        return int(env)
    logical = (cores or _usable_logical_cores)()
    physical = max(1, int(logical * (physical_fraction or _physical_fraction)()))
    idle = int(logical - round((busy or _busy_cores)()))
    return max(1, min(physical, idle))

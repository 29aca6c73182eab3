"""The default number of CPU threads for torch.

torch's own default is every logical core. On a shared machine whose cores are already busy (CI
runners, small cloud VMs, a laptop compiling something) that oversubscribes them and OpenMP's
spinning threads slow generation down several-fold (``scripts/bench_pipeline.py`` measures it).
:func:`default_threads` takes the physical cores this process may run on, minus the ones other
processes keep busy, at least 1. An explicit ``OMP_NUM_THREADS`` wins. Busy cores (:func:`busy_cores`): the
smaller of the 1-minute load average and the cores busy over a :data:`BUSY_SAMPLE_S` sample of the CPU counters
(``/proc/stat``). The average alone lags: a minute after a job on every core has ended it still counts most of a
core, so a run right after ``make setup`` or the test suite got fewer threads than the idle machine had; the
sample alone would count a short burst of another process as a steady job.
Tiny random-weight test pipelines use :data:`TINY_MODEL_THREADS`: their kernels are too small to
gain from more threads.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Optional, Tuple

__all__ = ["default_threads", "busy_cores", "sampled_busy_cores", "TINY_MODEL_THREADS", "BUSY_SAMPLE_S"]

TINY_MODEL_THREADS = 1
THREADS_ENV = "OMP_NUM_THREADS"
BUSY_SAMPLE_S = 0.1     # seconds of CPU counters sampled for the cores busy now (10 ms jiffies: 5% steps on 2 cores)
PROC_STAT = "/proc/stat"


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


def _load_average() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _cpu_counters() -> Optional[Tuple[float, float]]:
    """(busy, total) jiffies of all the machine's CPUs since boot (the ``cpu`` line of /proc/stat; idle and iowait
    are not busy; guest time is already inside user time); None where there is no /proc/stat."""
    try:
        with open(PROC_STAT) as f:
            values = [float(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(values) < 5:
        return None
    total = sum(values)
    return total - values[3] - values[4], total


def sampled_busy_cores(counters: Callable[[], Optional[Tuple[float, float]]] = _cpu_counters,
                       sleep: Callable[[float], None] = time.sleep, logical: Optional[int] = None) -> Optional[float]:
    """Cores busy over the next :data:`BUSY_SAMPLE_S` seconds (this process sleeps meanwhile), or None."""
    first = counters()
    sleep(BUSY_SAMPLE_S)
    second = counters()
    if first is None or second is None or second[1] <= first[1]:
        return None
    return (second[0] - first[0]) / (second[1] - first[1]) * (logical or os.cpu_count() or 1)


def busy_cores(load: Callable[[], Optional[float]] = _load_average,
               now: Callable[[], Optional[float]] = sampled_busy_cores) -> float:
    """Cores other processes keep busy: the smaller of the load average and a sample of now (see the module
    docstring); whichever exists when only one does; 0 when neither does."""
    values = [v for v in (load(), now()) if v is not None]
    return min(values) if values else 0.0


def default_threads(cores: Optional[Callable[[], int]] = None, physical_fraction: Optional[Callable[[], float]] = None,
                    busy: Optional[Callable[[], float]] = None) -> int:
    """Threads to use when the user did not say (see the module docstring).

    The three callables replace the machine probes (for tests and the benchmark)."""
    env = os.environ.get(THREADS_ENV, "")
    if env.isdigit() and int(env) >= 1:
        return int(env)
    logical = (cores or _usable_logical_cores)()
    physical = max(1, int(logical * (physical_fraction or _physical_fraction)()))
    idle = int(logical - round((busy or busy_cores)()))
    return max(1, min(physical, idle))

"""Child processes that never outlive the builder (the Blender renderer).

:func:`run_tied` starts the child in its own process group (so it and anything it spawns can be
ended together) and, on Linux, asks the kernel to SIGKILL it when its parent dies
(``prctl(PR_SET_PDEATHSIG)``): a SIGKILLed builder leaves no orphaned Blender behind. On a timeout, an
exception or a signal in the builder (KeyboardInterrupt, SIGTERM turned into SystemExit) the whole
group is killed before the call returns or raises.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent_pid: int):
    """``preexec_fn``: SIGKILL this child when the parent dies (Linux; a no-op elsewhere)."""

    def setup() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return setup


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s process group (it leads its own group) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_tied(cmd: list[str], timeout_s: float | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)`` with the child in its
    own process group, killed with its group on timeout / error and by the kernel when this process
    dies. Raises :class:`subprocess.TimeoutExpired` after killing the group."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_die_with_parent(os.getpid()))
    try:
        out, err = proc.communicate(timeout=timeout_s or None)
    except BaseException:  # timeout, KeyboardInterrupt, SystemExit: never leave the group running
        kill_group(proc)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

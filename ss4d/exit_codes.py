"""Exit codes of every ss4d command and the one rule that turns an exception into a line and a code.

0 done; 1 the run failed (:class:`~ss4d.errors.GenerationError`, a stopped training run, or a bug);
2 bad input the user can fix (:class:`~ss4d.errors.InputError`, a full disk, a read-only or
over-long path); 130 Ctrl-C; 143 SIGTERM.
"""
from __future__ import annotations

import errno
import signal
import sys
import traceback

from .errors import GenerationError, InputError

__all__ = ["EXIT_OK", "EXIT_INTERNAL", "EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "EXIT_TERMINATED",
           "ENVIRONMENT_ERRNOS", "report_error"]

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2
SIGNAL_EXIT_BASE = 128  # shells report death by signal N as 128 + N
EXIT_INTERRUPTED = SIGNAL_EXIT_BASE + signal.SIGINT    # 130
EXIT_TERMINATED = SIGNAL_EXIT_BASE + signal.SIGTERM    # 143
MAX_MESSAGE_CHARS = 300  # an internal error's message is cut to this, on one line
#: OS errors that are the user's environment, not a bug: exit 2 with a hint.
ENVIRONMENT_ERRNOS = {errno.ENOSPC: "free some disk space or write elsewhere with -o",
                      errno.EDQUOT: "free some of your disk quota or write elsewhere with -o",
                      errno.EROFS: "write elsewhere with -o",
                      errno.EACCES: "check the permissions, or write elsewhere with -o",
                      errno.ENAMETOOLONG: "choose a shorter name with -o"}


def report_error(prog: str, exc: Exception, debug: bool = False, failed: tuple = (GenerationError,),
                 nothing_written: bool = True) -> int:
    """Print ``exc`` as one line on stderr (the traceback too with ``debug``) and return its exit code.

    ``failed``: exception classes that mean "the run failed" (exit 1, printed as "stopped"/"error"
    lines, not as a bug). ``nothing_written``: whether the command's writes are all-or-nothing, so an
    environment error can say that nothing was written."""
    if debug:
        traceback.print_exc()
    if isinstance(exc, InputError):
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if isinstance(exc, failed):
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
        where = f" ({exc.filename})" if exc.filename else ""
        written = "; nothing was written" if nothing_written else ""
        print(f"{prog}: error: {exc.strerror or exc}{where}{written}; {ENVIRONMENT_ERRNOS[exc.errno]}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    msg = " ".join(str(exc).split()) or type(exc).__name__
    print(f"{prog}: internal error: {type(exc).__name__}: {msg[:MAX_MESSAGE_CHARS]} (rerun with --debug for the "
          f"traceback and report it)", file=sys.stderr)
    return EXIT_INTERNAL

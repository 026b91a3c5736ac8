"""A Ctrl-C while the ``torchnce`` command starts: one line and status 130, no traceback.

``python -m torchnce`` and the ``torchnce`` console script import this package, and torch
with it (a second or more), before their ``main`` runs and takes over Ctrl-C. During that
time a SIGINT ends the process with one line on stderr and status 130, as at any later moment
of a run (nothing has been written yet). Only for the command itself: an import by any other
program or ``-m`` target keeps Python's own handling.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

_installed = False


def _is_the_command() -> bool:
    """Whether this process is the ``torchnce`` command (``python -m torchnce`` or the
    console script), which is importing the package before running."""
    argv: list[str] = list(getattr(sys, "argv", None) or [""])
    if argv[0] == "-m":  # Python sets this while it imports the parents of a -m target
        orig: list[str] = list(getattr(sys, "orig_argv", []))
        return "-m" in orig[:-1] and orig[orig.index("-m") + 1] == "torchnce"
    return os.path.basename(str(argv[0])) == "torchnce"


def _quit(signum: int, frame: FrameType | None) -> None:
    del signum, frame
    os.write(2, b"torchnce: interrupted while starting; nothing was written\n")
    os._exit(130)


def stop_interrupts_while_starting() -> None:
    """For the ``torchnce`` command: a SIGINT until :func:`restore_interrupts` quits with
    status 130 and one line."""
    global _installed
    if (_is_the_command() and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        signal.signal(signal.SIGINT, _quit)
        _installed = True


def restore_interrupts() -> None:
    """Python's own Ctrl-C (``KeyboardInterrupt``) again, once the command's main runs."""
    global _installed
    if _installed:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _installed = False

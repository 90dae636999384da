"""A file's memory map failing (SIGBUS) ends the command with one line, exit 2.

SQLite maps a WAL database's index (its `-shm` file) into memory; once that file cannot be
written (made immutable with `chattr +i`, which stops root too; its disk gone), the
kernel answers the next write into the map with SIGBUS, which by default kills the process
without a word ("Bus error", exit 135). A handler set with `signal.signal` cannot help:
Python's C handler only notes the signal and returns to the faulting instruction, which
faults again. The handler here is a C-callable function run at the fault itself; it only
writes one line and exits (no cleanup, nothing that waits for the faulting thread). What
the process had in flight is then as after a kill: a resume heals and retries it.
"""

from __future__ import annotations

import ctypes
import os
import signal
from typing import Any

from sweeps.cli.base import EXIT_USAGE

MESSAGE = (
    b"sweeps: error: a file mapped in memory failed (SIGBUS), most likely a store's database"
    b" file made read-only or immutable (chattr +i) or its disk failing; once it is writable"
    b" again, a resume retries the trials in flight\n"
)
_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_int)
_kept: list[Any] = []  # the handler's C thunk must outlive its installation


def _on_bus_error(_signum: int) -> None:
    os.write(2, MESSAGE)
    os._exit(EXIT_USAGE)


def report_bus_errors() -> None:
    """Install the SIGBUS handler for this process (and the processes it forks)."""
    bus = getattr(signal, "SIGBUS", None)
    if bus is None or _kept:
        return
    try:
        install = ctypes.CDLL(None, use_errno=True).signal
    except (OSError, AttributeError):
        return
    install.restype = ctypes.c_void_p
    install.argtypes = [ctypes.c_int, _HANDLER]
    handler = _HANDLER(_on_bus_error)
    install(bus, handler)
    _kept.append(handler)

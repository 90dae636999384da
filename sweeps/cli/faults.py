"""A database file's memory map failing (SIGBUS) ends the command with one line, exit 2.

SQLite maps a WAL database's index (its `-shm` file) into memory; once that file cannot be
written (made immutable with `chattr +i`, which stops root too; its disk gone), the
kernel answers the next write into the map with SIGBUS, which by default kills the process
without a word ("Bus error", exit 135). A Python signal handler cannot help: Python runs
it after the faulting instruction returns, which faults again. The handler here is called
by the C library at the fault: it writes one line and exits at once. What the process had
in flight is then as after a kill: a resume heals and retries it.
"""

from __future__ import annotations

import ctypes
import os
import signal
from typing import Any

from sweeps.cli.base import EXIT_USAGE

MESSAGE = (
    b"sweeps: error: a database file mapped in memory can no longer be written (SIGBUS): "
    b"one of the store's files was made read-only or immutable (chattr +i), or its disk "
    b"failed; once it is writable again, a resume retries the trials in flight\n"
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

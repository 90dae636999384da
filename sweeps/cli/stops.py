"""How a signal stops a command: SIGINT, SIGTERM and SIGHUP all end it as Ctrl-C does.

SIGTERM is how clusters stop a process (`scancel`, a preempted Slurm job, `docker stop`,
`kubectl delete`, Ray cancelling a task); SIGHUP comes from a closed terminal. Python's
default for both ends the process on the spot, leaving its round's trials RUNNING until a
heartbeat grace period passes. As an interrupt, the round in progress is failed and
recorded at once and the completed trials are kept. The exit code is 128 + the signal's
number, as a shell reports a process ended by that signal (130, 143, 129).
"""

from __future__ import annotations

import signal
from types import FrameType

# The signal that stopped the command; SIGINT when click saw the interrupt itself.
_stopped_by = [signal.SIGINT]


def install() -> None:
    """Called once at the process's entry, before any command runs."""
    # A command started in the background by a non-interactive shell (`sweeps run ... &`
    # in a script) inherits SIGINT ignored and Python then installs no KeyboardInterrupt
    # handler: `kill -INT`, or the launcher of `--workers` passing on a Ctrl-C, would do
    # nothing and the study would run to its end.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    _stopped_by[0] = signal.Signals(signum)
    raise KeyboardInterrupt


def interrupted_exit_code() -> int:
    """128 + the number of the signal that interrupted the command."""
    return 128 + int(_stopped_by[0])

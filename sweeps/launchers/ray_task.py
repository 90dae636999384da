"""What one Ray task of `--launcher ray` runs where Ray placed it: a `sweeps worker` process
that sees the GPUs Ray gave the task, and nothing else.

Imported by Ray's worker processes on every node: the standard library and Ray only (Ray is
loaded there already), so starting a task imports nothing of the study.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import IO

TAIL_LINES = 20  # the end of a failed worker's stderr that the launcher shows
PR_SET_PDEATHSIG = 1  # prctl(2)
POLL_S = 0.2  # how often the task looks at its process (and so how soon a cancel lands)


class WorkerProcessDied(Exception):
    """The `sweeps worker` process was ended by a signal this task did not send (a kill, the
    kernel's out-of-memory killer): Ray runs the task again (its `retry_exceptions`)."""

    def __init__(self, index: int, signal_number: int, tail: str) -> None:
        super().__init__(index, signal_number, tail)
        self.index = index
        self.signal_number = signal_number
        self.tail = tail

    def __str__(self) -> str:
        try:
            name = signal.Signals(self.signal_number).name
        except ValueError:
            name = str(self.signal_number)
        return f"sweeps worker {self.index} was killed by {name}"


def run_worker_process(index: int, argv: list[str], env: dict[str, str]) -> dict[str, object]:
    """Run `sweeps worker *argv` with `env` added; returns its report (`WorkerReport`'s
    fields). A `ray.cancel` of the task raises KeyboardInterrupt here, which is passed on
    to the process as Ctrl-C. A Ray worker may ignore SIGINT (as its node was started), and
    then no KeyboardInterrupt comes: Python's handler is set for the task's time."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _run(index, argv, env)
    finally:
        signal.signal(signal.SIGINT, previous)


def _run(index: int, argv: list[str], env: dict[str, str]) -> dict[str, object]:
    import ray

    gpus = [str(g) for g in ray.get_gpu_ids()]
    child_env = {**os.environ, **env}
    if not gpus:  # Ray leaves the node's GPUs visible to a task given none: hide them
        child_env["CUDA_VISIBLE_DEVICES"] = ""
    command = [sys.executable, "-m", "sweeps", "worker", *argv]
    proc = subprocess.Popen(
        command, env=child_env, stderr=subprocess.PIPE, preexec_fn=_child_setup()
    )
    assert proc.stderr is not None
    tail = _Tail(proc.stderr)
    try:
        code = _wait(proc)
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        proc.wait()
        raise
    finally:
        tail.join()
    if code < 0:
        raise WorkerProcessDied(index, -code, tail.text())
    return {
        "index": index,
        "exit_code": code,
        "node": socket.gethostname(),
        "gpus": gpus,
        "error": tail.text() if code else None,
    }


def _child_setup() -> Callable[[], None]:
    """What the child runs before its exec. Ray's worker blocks SIGINT, and a child
    inherits its signal mask: unblocked, so that a cancel's Ctrl-C reaches the worker. On
    Linux the child is also killed when the Ray worker that started it dies (a forced
    cancel, a crash), so no `sweeps worker` outlives its task; Ray starts its own
    processes the same way."""
    prctl = None
    if sys.platform.startswith("linux"):
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return setup


def _wait(proc: subprocess.Popen[bytes]) -> int:
    """The process's exit code; waits in short steps, where a cancel can interrupt it."""
    while True:
        try:
            return proc.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            continue


class _Tail:
    """Copies a process's stderr to this one's (Ray's worker log) and keeps its last lines."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._lines: deque[str] = deque(maxlen=TAIL_LINES)
        self._thread = threading.Thread(target=self._copy, args=(stream,), daemon=True)
        self._thread.start()

    def _copy(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace")
            self._lines.append(line.rstrip("\n"))
            sys.stderr.write(line)
            sys.stderr.flush()

    def join(self) -> None:
        self._thread.join(timeout=5)

    def text(self) -> str:
        return "\n".join(self._lines)

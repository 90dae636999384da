"""`--launcher local` (the default): the workers are child processes of this one.

The `sweeps` command lets its workers write to its own terminal. A library call keeps
the caller's terminal clean (`output="log"`): there every line a worker writes (its
warnings and errors on stderr, whatever a user's task prints) becomes a record of the
logger `sweeps.workers` (stderr at WARNING, stdout at INFO), which prints nothing unless
the application configures logging. A task given to the API as a Python object is
imported by the workers from the folder its module was imported from here
(`import_path`, put first on their PYTHONPATH).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from typing import IO, TYPE_CHECKING, Literal

from sweeps.launchers.base import WorkerPlan, WorkerReport

if TYPE_CHECKING:
    from sweeps.storage import Stores


_logger = logging.getLogger("sweeps.workers")
# How long `close` waits for the last lines of a worker's output.
DRAIN_S = 5.0


class LocalLauncher:
    """N `sweeps worker` processes on this machine, the same path a remote machine uses.

    Args:
        output: `inherit`: their stdout and stderr are this process's, so their errors
            show as they happen; `log`: records of the logger `sweeps.workers`.
        import_path: A folder put first on their PYTHONPATH.
    """

    places_devices = False

    def __init__(
        self, output: Literal["inherit", "log"] = "inherit", import_path: str | None = None
    ) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._to_log = output == "log"
        self._import_path = import_path
        self._pumps: list[threading.Thread] = []

    def prepare(self, stores: Stores, track: bool) -> None:
        """Every store this process reaches, its workers reach: nothing to refuse."""

    def start(self, plan: WorkerPlan) -> None:
        env = {**os.environ, **plan.env}
        if self._import_path is not None:
            rest = env.get("PYTHONPATH")
            env["PYTHONPATH"] = os.pathsep.join([self._import_path, *([rest] if rest else [])])
        for index, args in enumerate(plan.argv):
            command = [sys.executable, "-m", "sweeps", "worker", *args]
            if not self._to_log:
                self._procs.append(subprocess.Popen(command, env=env))
                continue
            pipe = subprocess.PIPE
            proc = subprocess.Popen(command, env=env, stdout=pipe, stderr=pipe)
            assert proc.stdout is not None and proc.stderr is not None
            self._pump(proc.stdout, logging.INFO, index)
            self._pump(proc.stderr, logging.WARNING, index)
            self._procs.append(proc)

    def _pump(self, stream: IO[bytes], level: int, index: int) -> None:
        """A thread that logs each line of `stream` until the worker closes it."""

        def forward() -> None:
            with stream:
                for raw in iter(stream.readline, b""):
                    line = raw.decode(errors="replace").rstrip()
                    if line:
                        _logger.log(level, "worker %d: %s", index, line)

        pump = threading.Thread(target=forward, name=f"sweeps-worker-{index}-output", daemon=True)
        pump.start()
        self._pumps.append(pump)

    def running(self) -> bool:
        return any(p.poll() is None for p in self._procs)

    def cancel(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)

    def exit_codes(self) -> list[int]:
        return [p.returncode for p in self._procs if p.returncode not in (0, None)]

    def reports(self) -> list[WorkerReport]:
        return [
            WorkerReport(i, p.returncode)
            for i, p in enumerate(self._procs)
            if p.returncode is not None
        ]

    def close(self) -> None:
        """Kills what outlived a cancel's grace period, so no worker is left behind."""
        for p in self._procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for pump in self._pumps:
            pump.join(timeout=DRAIN_S)

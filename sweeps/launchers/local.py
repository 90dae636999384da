"""`--launcher local` (the default): the workers are child processes of this one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

from sweeps.launchers.base import WorkerPlan, WorkerReport

if TYPE_CHECKING:
    from sweeps.storage import Stores


class LocalLauncher:
    """N `sweeps worker` processes on this machine, the same path a remote machine uses.
    Their stderr is this process's, so their errors show as they happen."""

    places_devices = False

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def prepare(self, stores: Stores, track: bool) -> None:
        """Every store this process reaches, its workers reach: nothing to refuse."""

    def start(self, plan: WorkerPlan) -> None:
        env = {**os.environ, **plan.env}
        for args in plan.argv:
            command = [sys.executable, "-m", "sweeps", "worker", *args]
            self._procs.append(subprocess.Popen(command, env=env))

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

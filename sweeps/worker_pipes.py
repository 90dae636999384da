"""How a study's local `sweeps worker` processes are started, and where their output goes.

The `sweeps` command lets its workers write to its own terminal. A library call keeps
the caller's terminal clean: there every line a worker writes (its warnings and errors on
stderr, whatever a user's task prints) becomes a record of the logger `sweeps.workers`
(stderr at WARNING, stdout at INFO), which prints nothing unless the application
configures logging. A task given as a Python object is imported by the workers from the
folder its module was imported from here, put first on their PYTHONPATH.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

_logger = logging.getLogger("sweeps.workers")


@dataclass
class WorkerProcesses:
    """Starts the worker processes of one study run."""

    to_logging: bool = False  # their output as log records (else the terminal's)
    import_path: str | None = None  # put first on their PYTHONPATH
    _pumps: list[threading.Thread] = field(default_factory=list, init=False, repr=False)

    def environment(self) -> dict[str, str]:
        """This process's environment with the workers' PYTHONPATH."""
        env = dict(os.environ)
        if self.import_path is not None:
            rest = env.get("PYTHONPATH")
            env["PYTHONPATH"] = os.pathsep.join([self.import_path, *([rest] if rest else [])])
        return env

    def start(
        self, args: Sequence[str], env: dict[str, str], index: int
    ) -> subprocess.Popen[bytes]:
        if not self.to_logging:
            return subprocess.Popen(args, env=env)
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        self._pump(proc.stdout, logging.INFO, index)
        self._pump(proc.stderr, logging.WARNING, index)
        return proc

    def _pump(self, stream: IO[bytes], level: int, index: int) -> None:
        def forward() -> None:
            with stream:
                for raw in iter(stream.readline, b""):
                    line = raw.decode(errors="replace").rstrip()
                    if line:
                        _logger.log(level, "worker %d: %s", index, line)

        pump = threading.Thread(target=forward, name=f"sweeps-worker-{index}-output", daemon=True)
        pump.start()
        self._pumps.append(pump)

    def close(self) -> None:
        """Wait for the last lines of the workers that exited."""
        for pump in self._pumps:
            pump.join(timeout=5)

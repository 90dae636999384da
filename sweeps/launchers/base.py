"""The launcher contract: a plan of N workers in, their exit codes out."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

# How often a launcher's processes and the study's progress are looked at while waiting.
POLL_S = 0.5


@dataclass(frozen=True)
class WorkerPlan:
    """What every launcher starts: worker i runs `python -m sweeps worker *argv[i]` with
    `env` added to its environment. The store URLs travel in `env`, never in argv, so no
    password shows in `ps`, a scheduler's job listing or a dashboard's command line."""

    study: str
    argv: list[list[str]]  # one argument list per worker, after `sweeps worker`
    env: dict[str, str] = field(default_factory=dict)
    gpus_per_worker: float = 0.0  # fractional where the engine allows (Ray)
    cpus_per_worker: float = 1.0

    @property
    def workers(self) -> int:
        return len(self.argv)


class Launcher(Protocol):
    """Starts a plan's workers somewhere and reports on them; never touches the stores."""

    def start(self, plan: WorkerPlan) -> None:
        """Submit or start every worker; returns once they are on their way."""

    def running(self) -> bool:
        """True while any worker may still start or run (queued, running, restarting)."""

    def cancel(self) -> None:
        """Ctrl-C: stop every worker (they finish their trial's bookkeeping if they can)."""

    def exit_codes(self) -> list[int]:
        """The codes of the workers that did not exit 0, once `running()` is False."""

    def close(self) -> None:
        """Release what `start` took (a cluster connection, a temp directory)."""


def follow(launcher: Launcher, on_poll: Callable[[], None], cancel_wait_s: float = 60) -> None:
    """Wait for the launcher's workers, calling `on_poll` (progress) between looks and once
    at the end; Ctrl-C cancels them all and is raised again once they have stopped (or
    `cancel_wait_s` has passed)."""
    try:
        while launcher.running():
            on_poll()
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        launcher.cancel()
        deadline = time.monotonic() + cancel_wait_s
        while launcher.running() and time.monotonic() < deadline:
            time.sleep(POLL_S)
        raise
    finally:
        on_poll()

"""The launcher contract: a plan of N workers in, their reports out."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from sweeps.storage import Stores

# How often a launcher's processes and the study's progress are looked at while waiting.
POLL_S = 0.5


@dataclass(frozen=True)
class WorkerPlan:
    """What every launcher starts: worker i runs `python -m sweeps worker *argv[i]` with
    `env` added to its environment. The store URLs travel in `env`, never in argv, so no
    password shows in `ps`, a scheduler's job listing or a dashboard's command line. What
    each worker is given (CPUs, GPUs, a time limit) is the launcher's own setting."""

    study: str
    argv: list[list[str]]  # one argument list per worker, after `sweeps worker`
    env: dict[str, str] = field(default_factory=dict)

    @property
    def workers(self) -> int:
        return len(self.argv)


@dataclass(frozen=True)
class WorkerReport:
    """How one worker ended, and where it ran where the engine placed it."""

    index: int
    exit_code: int
    node: str | None = None  # the machine the engine placed it on
    gpus: tuple[str, ...] = ()  # the GPU ids it was given (its CUDA_VISIBLE_DEVICES)
    error: str | None = None  # the end of its stderr, when it failed and nobody saw it

    def as_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "exit_code": self.exit_code,
            "node": self.node,
            "gpus": list(self.gpus),
            "error": self.error,
        }


class Launcher(Protocol):
    """Starts a plan's workers somewhere and reports on them; never touches the stores."""

    # True where the engine gives each worker its device (the GPUs it placed it on): the
    # launching process then checks no device of its own.
    places_devices: bool

    def prepare(self, stores: Stores, track: bool) -> None:
        """Before anything is written: connect, and refuse (UsageError) what cannot work
        there, such as stores on a local path with workers on other machines."""

    def start(self, plan: WorkerPlan) -> None:
        """Submit or start every worker; returns once they are on their way."""

    def running(self) -> bool:
        """True while any worker may still start or run (queued, running, restarting)."""

    def cancel(self) -> None:
        """Ctrl-C: stop every worker (they finish their trial's bookkeeping if they can)."""

    def exit_codes(self) -> list[int]:
        """The codes of the workers that did not exit 0, once `running()` is False."""

    def reports(self) -> list[WorkerReport]:
        """One report per worker that ended, in the plan's order."""

    def close(self) -> None:
        """Release what `prepare` and `start` took (a cluster connection, workers that
        outlived a cancel); safe to call more than once, or before `start`."""


@runtime_checkable
class Detachable(Protocol):
    """A launcher whose workers run on without this process (a batch scheduler's)."""

    def detach(self) -> str:
        """Once started: leave the workers to the engine (`close` then stops none of
        them); returns what names them there (a Slurm job id)."""


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

"""A task whose trials wait where a test holds them: `--task python:tests.gate:build`.

Tests that need a trial in flight (to kill its worker, interrupt it, watch its heartbeat)
hold it here until they let it go, instead of sizing it in epochs: how long N epochs take
depends on the machine and on what else runs on it, a held trial does not.

The hold point is the model build (`Task.make_model`), which runs inside training, after
the trial was asked (Optuna says RUNNING and the worker beats for it). Every build takes
the next ticket, unique across processes: the launcher's pre-flight check of a study
builds once (ticket 0 for `sweeps run`; the Task contract check's build takes no ticket),
then a sequential trial builds once per repeat,
and a stacked round (`--batch`) once per seed. A build waits while the gate is held for
every build (`Gate.hold()`) or for its ticket (`Gate.hold(n)`); while it waits, the file
`waiting.N` exists. The files live in the directory named by SWEEPS_TEST_GATE.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from trainer.models import ModelSpec, make_model_factory
from trainer.tasks import Split, Task, squared_loss
from trainer.tasks.python_task import CHECK_SEED

ENV = "SWEEPS_TEST_GATE"
SPEC = "python:tests.gate:build"
POLL_S = 0.02
HANG_S = 600.0  # a held build gives up (the trial fails) if its test never comes back


def build(data_seed: int) -> Task:
    """A small linear regression; trials train in milliseconds once let through."""
    gen = torch.Generator().manual_seed(data_seed)
    X = torch.randn(60, 3, generator=gen)
    y = X @ torch.tensor([[1.0], [-0.5], [0.25]]) + 0.05 * torch.randn(60, 1, generator=gen)
    train, val, test = (Split(X[i : i + 20], y[i : i + 20]) for i in (0, 20, 40))
    model = make_model_factory(ModelSpec(), 3, 1)
    return Task("gate", train, val, test, make_model=_gated(model), loss=squared_loss)


def _gated(make_model: Callable[[torch.Generator], nn.Module]) -> Callable[..., nn.Module]:
    directory = Path(os.environ[ENV])

    def make(gen: torch.Generator) -> nn.Module:
        if gen.initial_seed() != CHECK_SEED:  # the contract check builds a model too
            _pass(directory, _ticket(directory))
        return make_model(gen)

    return make


def _ticket(directory: Path) -> int:
    """The lowest ticket no build has taken (O_EXCL: one winner even across processes)."""
    n = 0
    while True:
        try:
            os.close(os.open(directory / f"build.{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return n
        except FileExistsError:
            n += 1


def _pass(directory: Path, ticket: int) -> None:
    waiting = directory / f"waiting.{ticket}"
    deadline = time.monotonic() + HANG_S
    while (directory / "hold").exists() or (directory / f"hold.{ticket}").exists():
        waiting.touch()
        if time.monotonic() > deadline:
            raise RuntimeError(f"gate: build {ticket} was never let through")
        time.sleep(POLL_S)
    waiting.unlink(missing_ok=True)


class Gate:
    """The test's side: hold builds, see which wait, let them through."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory

    @property
    def env(self) -> dict[str, str]:
        """What a process running the gate task needs (the module found from anywhere)."""
        root = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        return {ENV: str(self.directory), "PYTHONPATH": path}

    def hold(self, ticket: int | None = None) -> None:
        """Hold every build from now on (None), or only build `ticket`."""
        self._file(ticket).touch()

    def release(self, ticket: int | None = None) -> None:
        """Let every build through (None) or build `ticket`. Their `waiting` files go too:
        a live build would remove its own, one whose process was killed never will."""
        self._file(ticket).unlink(missing_ok=True)
        pattern = "waiting.*" if ticket is None else f"waiting.{ticket}"
        for path in self.directory.glob(pattern):
            path.unlink(missing_ok=True)

    def waiting(self) -> list[int]:
        """The tickets of the builds held now."""
        return sorted(int(p.suffix[1:]) for p in self.directory.glob("waiting.*"))

    def wait_until_held(self, count: int = 1, timeout_s: float = 300.0) -> list[int]:
        """Blocks until `count` builds are held; returns their tickets. The timeout only
        catches a hang (a worker that died before it got here)."""
        deadline = time.monotonic() + timeout_s
        while len(held := self.waiting()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} held build(s) expected, {held} after {timeout_s} s")
            time.sleep(POLL_S)
        return held

    def _file(self, ticket: int | None) -> Path:
        return self.directory / ("hold" if ticket is None else f"hold.{ticket}")

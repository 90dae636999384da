"""Helpers for study tests: run the real CLI in a subprocess, read Optuna directly."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import optuna
import sqlalchemy as sa

from sweeps.cli.process import quiet_optuna
from sweeps.config import SweepConfig
from sweeps.storage import open_storage
from sweeps.study import create_or_load
from tracking.records import TrialRecord
from trainer import TrialConfig, load_task, train


def cli_env(home: Path, storage: str | None = None, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "SWEEPS_HOME": str(home),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        **extra,
    }
    if storage:
        env["SWEEPS_STORAGE"] = storage
    env.pop("SWEEPS_TRACKING_URI", None)
    return env


def sweeps_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sweeps", *args]


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sweeps_cmd(*args), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def trained(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The trials that trained: those that took an identical earlier trial's result
    (`sweeps.attr_keys.REUSED_ATTR`) do not use up --trials."""
    from sweeps.attr_keys import REUSED_ATTR

    return [t for t in trials if REUSED_ATTR not in t.user_attrs]


def spent(trials: list[optuna.trial.FrozenTrial], budget: int) -> bool:
    """Whether workers spent exactly `budget` trials: every one trained counts, and a
    repeat of a finished configuration counts only past each worker's free ones, so the
    study holds at least `budget` trials of which at most `budget` trained."""
    return len(trained(trials)) <= budget <= len(trials)


def start_cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """`sweeps ARGS` started in the background, its output piped as text."""
    return subprocess.Popen(
        sweeps_cmd(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


HANG_S = 300.0  # what a wait allows before it fails: it only catches a hang


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = HANG_S) -> None:
    """Poll `check()` until it is true; the timeout only catches a hang."""
    import time

    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def wait_until_lost(
    url: str, study: str, count: int = 1, heartbeat_s: str = "1", timeout_s: float = 120
) -> None:
    """Until `count` RUNNING trials count as lost (their heartbeats stale: their worker is
    dead or stopped), as they would for a worker started then with `heartbeat_s`."""
    import time

    from sweeps.storage import lost_trials

    before = os.environ.get("SWEEPS_HEARTBEAT_S")
    os.environ["SWEEPS_HEARTBEAT_S"] = heartbeat_s
    try:
        storage = open_storage(url)
    finally:
        if before is None:
            del os.environ["SWEEPS_HEARTBEAT_S"]
        else:
            os.environ["SWEEPS_HEARTBEAT_S"] = before
    try:
        found = optuna.load_study(study_name=study, storage=storage)
        deadline = time.monotonic() + timeout_s
        while len(lost_trials(found, storage)) < count:
            assert time.monotonic() < deadline, f"{count} trial(s) of {study} never went stale"
            time.sleep(0.1)
    finally:
        storage.engine.dispose()


def wait_until_beaten(
    url: str, study: str, numbers: Iterable[int], span_s: float = 0.0, timeout_s: float = 120
) -> None:
    """Until each trial's heartbeat has moved on from the first one seen here by more than
    `span_s` (on the database's clock): its worker is beating for it, and has been for
    that long, past a grace period of `span_s`."""
    import time

    beats = sa.text(
        "SELECT t.number, h.heartbeat FROM trial_heartbeats h"
        " JOIN trials t ON t.trial_id = h.trial_id"
        " JOIN studies s ON s.study_id = t.study_id WHERE s.study_name = :study"
    )
    wanted = set(numbers)
    first: dict[int, datetime] = {}
    engine = sa.create_engine(url)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            with engine.connect() as conn:
                now = {n: _as_datetime(b) for n, b in conn.execute(beats, {"study": study})}
            for number in wanted & now.keys():
                first.setdefault(number, now[number])
            if all(n in first and (now[n] - first[n]).total_seconds() > span_s for n in wanted):
                return
            assert time.monotonic() < deadline, f"trials {sorted(wanted)} of {study} not beaten"
            time.sleep(0.1)
    finally:
        engine.dispose()


def _as_datetime(value: datetime | str) -> datetime:
    """SQLite hands DateTime columns read through plain SQL back as text."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def load(study: str, storage: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=storage)


def trials_or_none(study: str, storage: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials, or [] while another process has not created it yet (the study,
    or the storage's schema: opening it meanwhile collides with that process stamping it)."""
    try:
        return load(study, storage).trials
    except (KeyError, sa.exc.IntegrityError, sa.exc.OperationalError):
        return []


def grid_test_loss(lams: list[float], **overrides: object) -> dict[float, float]:
    """Train the d2l task at each λ with the l2 penalty; test loss per λ."""
    base = TrialConfig(penalty="l2", **overrides)  # type: ignore[arg-type]
    task = load_task(base)
    out = {}
    for lam in lams:
        final = train(base.replace(lambda_=lam), task).final
        assert final["test_loss"] is not None
        out[lam] = final["test_loss"]
    return out


@contextmanager
def sweep_study(storage_url: str, cfg: SweepConfig) -> Iterator[optuna.Study]:
    """`cfg`'s study (its sampler and pruner) on `storage_url`, as `sweeps run` creates it;
    the storage's connections closed afterwards (before a test database is dropped)."""
    quiet_optuna()
    storage = open_storage(storage_url)
    try:
        yield create_or_load(cfg, storage)
    finally:
        storage.engine.dispose()


class Unrecorded:
    """A `sweeps.lifecycle.RoundRecorder` that writes nothing: every record is kept, as
    if written, for tests of the round loop itself."""

    tracked = False

    def write(self, recs: list[TrialRecord]) -> list[TrialRecord]:
        return recs

    def show_best(self, recs: list[TrialRecord]) -> None:
        pass

    def start_writer(self) -> None:
        return None

    def draw_ahead(self, study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> None:
        pass

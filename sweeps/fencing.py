"""A worker writes a trial's MLflow run and results row only while it owns the trial.

A worker that stops beating for longer than the grace period (paused, preempted, its VM
frozen, a task holding the interpreter) loses its trials: another worker fails them as
stale, records them (`Recorder.heal`) and retries their parameters. When the first one
wakes up, its records of those trials are late and must not be written:

1. Before logging a round to MLflow, the trials this worker no longer owns are dropped
   (`Fence.owned`, a short read): no run is made for them.
2. The results rows are written in one transaction that first locks the round's trials
   and reads who owns them again (`Fence.guard`): a trial lost since step 1 gets no row,
   and the MLflow run made for it is deleted while the lock is held, unless the worker
   that healed the trial adopted that run as the trial's (its results row names it).
3. Healing takes the same lock around its MLflow writes and its results row
   (`Fence.locking`), so a late writer and a healer never interleave.
4. Optuna is told only the trials still RUNNING (`sweeps._optuna.tell`), and none that the
   fence dropped.

The trials dropped are reported on stderr, and the command's exit code says so
(`TrialsLost`). Where Optuna's tables cannot be read directly (`sweeps._optuna.fenced`),
the fence asks Optuna's public API whether each trial is still RUNNING, without a lock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import optuna
import sqlalchemy as sa

from sweeps._optuna import fenced, storage_of
from sweeps.errors import SweepsError
from tracking.reconnect import retrying
from tracking.records import TrialRecord
from tracking.results import ResultsStore

if TYPE_CHECKING:
    from sweeps._optuna.own import Ownership

EXIT_LOST = 3  # the exit code of a command some of whose trials another worker took over

# (connection, trial numbers, lock?) -> the numbers still owned
Owned = Callable[[sa.Connection, Sequence[int], bool], set[int]]


class TrialsLost(SweepsError):
    """Trials of this process were taken over by another worker while it did not beat
    (paused, preempted): their results were discarded, the rest of the work is kept."""

    exit_code = EXIT_LOST


@dataclass(frozen=True)
class Fence:
    """Who owns a study's trials, and the guards built on it (see above)."""

    owned_on: Owned
    lock_on: Callable[[sa.Connection, Sequence[int]], None]
    forkable: bool  # plain data over the caller's connection (a recording process's)

    def owned(self, results: ResultsStore, recs: Sequence[TrialRecord]) -> list[TrialRecord]:
        """Those of `recs` whose trials this worker still owns (step 1: no lock)."""
        if not recs:
            return []

        def read() -> set[int]:
            with results.engine.connect() as conn:
                return self.owned_on(conn, [rec.number for rec in recs], False)

        owned = retrying(read, results.engine.url)  # a read: safe to run again
        return [rec for rec in recs if rec.number in owned]

    def guard(
        self, discard: Callable[[list[str]], None]
    ) -> Callable[[sa.Connection, list[TrialRecord]], list[TrialRecord]]:
        """The results write's guard (step 2): the owned records; the runs of the others
        `discard`ed (deleted) unless a healer made them the trial's."""

        def owned_only(conn: sa.Connection, recs: list[TrialRecord]) -> list[TrialRecord]:
            owned = self.owned_on(conn, [rec.number for rec in recs], True)
            late = [rec for rec in recs if rec.number not in owned]
            made = {rec.number: rec.mlflow_run_id for rec in late if rec.mlflow_run_id}
            if made:
                study = late[0].study
                adopted = ResultsStore.run_ids_on(conn, study, list(made))
                discard([run for n, run in made.items() if adopted.get(n) != run])
            return [rec for rec in recs if rec.number in owned]

        return owned_only

    def locking(
        self, heal: Callable[[TrialRecord], TrialRecord]
    ) -> Callable[[sa.Connection, list[TrialRecord]], list[TrialRecord]]:
        """A healer's guard (step 3): `heal` each record with its trial locked."""

        def locked(conn: sa.Connection, recs: list[TrialRecord]) -> list[TrialRecord]:
            self.lock_on(conn, [rec.number for rec in recs])
            return [heal(rec) for rec in recs]

        return locked


def fence_of(study: optuna.Study) -> Fence:
    """The fence for `study`'s trials: Optuna's tables read in the writer's transaction
    where they may be (`sweeps._optuna.own`), else its public API."""
    storage = storage_of(study)
    grace = _grace_s(storage)
    ownership = fenced(study, "fencing a round's writes", lambda _e: _ownership(study, grace))
    if ownership is not None:
        return Fence(
            lambda conn, numbers, lock: ownership.owned(conn, numbers, lock=lock),
            ownership.lock,
            forkable=True,
        )

    def running(_conn: sa.Connection, numbers: Sequence[int], _lock: bool) -> set[int]:
        states = (optuna.trial.TrialState.RUNNING,)
        wanted = set(numbers)
        return {t.number for t in study.get_trials(deepcopy=False, states=states)} & wanted

    return Fence(running, lambda _conn, _numbers: None, forkable=False)


def _grace_s(storage: optuna.storages.BaseStorage | None) -> float | None:
    backend = getattr(storage, "_backend", storage)
    interval = getattr(backend, "heartbeat_interval", None)
    if interval is None:
        return None
    grace = getattr(backend, "grace_period", None)
    return float(grace if grace is not None else 2 * interval)


def _ownership(study: optuna.Study, grace_s: float | None) -> Ownership:
    from sweeps._optuna.own import Ownership

    return Ownership(study.study_name, grace_s)


def lost_message(numbers: Sequence[int]) -> str:
    """One line for the trials a process lost to another worker."""
    shown = ", ".join(str(n) for n in sorted(numbers))
    return (
        f"trial(s) {shown} went to another worker while this one did not beat (paused or "
        "preempted past the heartbeat's grace period); their results here were discarded"
    )

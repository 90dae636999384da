"""Which of a study's trials a worker still owns, read from Optuna's tables inside the
caller's transaction: the fence around a round's writes (`sweeps.fencing`).

A trial is owned while Optuna has it RUNNING and its heartbeat is not stale (no older
than the storage's grace period by the database's clock, the rule by which another
worker fails it: `optuna.storages.fail_stale_trials`). With `lock`, the trials' rows are
locked (PostgreSQL: FOR UPDATE; SQLite's write transaction locks the whole database), so
that no worker can fail them until the caller's transaction ends: Optuna's own state
change locks the same rows first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from optuna.storages._rdb import models
from optuna.trial import TrialState

_TRIALS = models.TrialModel.__table__
_BEATS = models.TrialHeartbeatModel.__table__
_STUDIES = models.StudyModel.__table__


@dataclass(frozen=True)
class Ownership:
    """The fence's reading of one study; plain data, so a forked writer can hold it."""

    study: str
    grace_s: float | None  # None: no heartbeats, RUNNING is enough

    def owned(self, conn: sa.Connection, numbers: Sequence[int], *, lock: bool) -> set[int]:
        """The trial numbers of `numbers` this worker still owns (see above)."""
        if not numbers:
            return set()
        study_id = sa.select(_STUDIES.c.study_id).where(_STUDIES.c.study_name == self.study)
        query = (
            sa.select(_TRIALS.c.trial_id, _TRIALS.c.number)
            .where(
                _TRIALS.c.study_id == study_id.scalar_subquery(),
                _TRIALS.c.number.in_(list(numbers)),
                _TRIALS.c.state == TrialState.RUNNING,
            )
            .order_by(_TRIALS.c.trial_id)  # one lock order for every worker
        )
        if lock and conn.dialect.name != "sqlite":
            query = query.with_for_update(of=_TRIALS)
        running = {int(tid): int(number) for tid, number in conn.execute(query)}
        if self.grace_s is None or not running:
            return set(running.values())
        now = conn.execute(sa.select(sa.func.now())).scalar_one().replace(tzinfo=None)
        beats = conn.execute(
            sa.select(_BEATS.c.trial_id, _BEATS.c.heartbeat).where(
                _BEATS.c.trial_id.in_(list(running))
            )
        )
        grace = timedelta(seconds=self.grace_s)
        stale = {int(tid) for tid, beat in beats if now - beat.replace(tzinfo=None) > grace}
        # A trial without a heartbeat row yet is being beaten for (the round's first beat
        # is on its way); Optuna never fails such a trial as stale.
        return {number for tid, number in running.items() if tid not in stale}

    def lock(self, conn: sa.Connection, numbers: Sequence[int]) -> None:
        """Lock these trials' rows until the transaction ends, whatever their state (a
        healer's side of the fence)."""
        if conn.dialect.name == "sqlite" or not numbers:
            return  # the immediate write transaction holds the database
        study_id = sa.select(_STUDIES.c.study_id).where(_STUDIES.c.study_name == self.study)
        conn.execute(
            sa.select(_TRIALS.c.trial_id)
            .where(
                _TRIALS.c.study_id == study_id.scalar_subquery(),
                _TRIALS.c.number.in_(list(numbers)),
            )
            .order_by(_TRIALS.c.trial_id)
            .with_for_update()
        ).all()

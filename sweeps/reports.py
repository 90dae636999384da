"""Pruning reports of every trial in flight, written together.

`Trial.report` stores each value in its own ORM session: ~1.9 ms a value on SQLite here, of
which the SQL is ~0.02 ms. That was 9 reports (~9 ms) per sequential d2l trial, the largest
Optuna cost left, and K per checkpoint of a `--batch K` round (~0.5 s of a 64-trial round).
`Reports` keeps each `Trial`'s own copy of its values up to date at once, as `Trial.report`
does (that copy is what the pruner reads), and inserts the values straight into Optuna's
`trial_intermediate_values` table when the round's trials end (before they are told), or
sooner if they have waited FLUSH_AFTER_S: one statement for all of them, stored as
RDBStorage stores them (NaN and ±inf as value types) and guarded as
`RDBStorage.set_trial_intermediate_value` guards them: nothing for a trial that is no
longer RUNNING, a step reported before is kept.

This writes another program's schema, so it is used only where `sweeps._optuna.rdb_backend`
allows it: an RDB storage at a schema revision its tests ran on
(tests/sweeps/test_reports.py compares what Optuna reads back with what `Trial.report`
stores); anything else gets `Trial.report`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import optuna
import sqlalchemy as sa
from optuna.storages._rdb import models

from sweeps._optuna import rdb_backend

Report = tuple[optuna.Trial, int, float]  # (trial, step, value)
# Reports wait at most this long for the trial's end to be written with the next ones: a
# pruner reads only completed trials' values, so waiting changes no decision, and a
# dashboard showing a running trial's curve still sees it within seconds.
FLUSH_AFTER_S = 5.0

_VALUES = models.TrialIntermediateValueModel
_TRIALS = models.TrialModel.__table__
_TABLE = _VALUES.__table__
_STORED = sa.insert(_TABLE).from_select(
    ["trial_id", "step", "intermediate_value", "intermediate_value_type"],
    sa.select(
        sa.bindparam("trial_id", type_=_TABLE.c.trial_id.type),
        sa.bindparam("step", type_=_TABLE.c.step.type),
        sa.bindparam("value", type_=_TABLE.c.intermediate_value.type),
        sa.bindparam("value_type", type_=_TABLE.c.intermediate_value_type.type),
    ).where(
        sa.exists().where(
            _TRIALS.c.trial_id == sa.bindparam("trial_id"),
            _TRIALS.c.state == optuna.trial.TrialState.RUNNING,
        ),
        ~sa.exists().where(
            _TABLE.c.trial_id == sa.bindparam("trial_id"),
            _TABLE.c.step == sa.bindparam("step"),
        ),
    ),
)


@dataclass
class Reports:
    """Stores reports of trials (see above); `Reports.of(study)` picks how."""

    engine: sa.Engine | None  # Optuna's storage engine; None: Optuna's own Trial.report
    _pending: list[dict[str, object]] = field(default_factory=list)
    _since: float = 0.0  # when the oldest pending report was added

    @classmethod
    def of(cls, study: optuna.Study) -> Reports:
        backend = rdb_backend(study, "writing pruning reports")
        return cls(None if backend is None else backend.engine)

    def add(self, reports: Sequence[Report]) -> None:
        """Reports values (a step a trial reported before is ignored, as Optuna does). The
        pruner sees them at once; the storage by the next `flush`, at the latest FLUSH_AFTER_S
        after the oldest of them."""
        for trial, step, reported in reports:
            value = float(reported)
            if step in _values(trial):
                continue
            if self.engine is None:
                trial.report(value, step)
                continue
            stored, value_type = _VALUES.intermediate_value_to_stored_repr(value)
            if not self._pending:
                self._since = time.monotonic()
            self._pending.append(
                {
                    "trial_id": trial._trial_id,
                    "step": step,
                    "value": stored,
                    "value_type": value_type,
                }
            )
            _values(trial)[step] = value
        if self._pending and time.monotonic() - self._since >= FLUSH_AFTER_S:
            self.flush()

    def flush(self) -> None:
        """Writes the pending reports, all in one statement."""
        if self.engine is None or not self._pending:
            return
        with self.engine.begin() as conn:
            conn.execute(_STORED, self._pending)
        self._pending = []


def _values(trial: optuna.Trial) -> dict[int, float]:
    """The trial's reported values as its `Trial` keeps them (what `Trial.report` updates)."""
    values: dict[int, float] = trial._cached_frozen_trial.intermediate_values
    return values

"""Pruning reports: a checkpoint's values of every trial in flight, in one transaction.

`Trial.report` stores each value in its own ORM session: ~1.9 ms a value on SQLite here, of
which the SQL is ~0.02 ms. That was 9 reports (~9 ms) per sequential d2l trial, the largest
Optuna cost left, and K per checkpoint of a `--batch K` round (~0.5 s of a 64-trial round).
`Reports.write` inserts them straight into Optuna's `trial_intermediate_values` table with
one statement per checkpoint, stored as RDBStorage stores them (NaN and ±inf as value
types) and guarded as `RDBStorage.set_trial_intermediate_value` guards them: nothing for a
trial that is no longer RUNNING, a step reported before is kept. Each `Trial`'s own copy of
its values is updated as `Trial.report` updates it, which is what the pruner reads.

This writes another program's schema, so it is used only for an RDB storage whose schema
revision is in TESTED_SCHEMA_REVISIONS (tests/sweeps/test_reports.py compares what Optuna
reads back with what `Trial.report` stores); anything else gets `Trial.report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import optuna
import sqlalchemy as sa
from optuna.storages._rdb import models

# Optuna's RDB schema revisions this module was checked against: v3.2.0.a is the head of
# Optuna 3.2 to 5.0. Add one only after tests/sweeps/test_reports.py passes on it.
TESTED_SCHEMA_REVISIONS = frozenset({"v3.2.0.a"})

Report = tuple[optuna.Trial, int, float]  # (trial, step, value)

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
    """Writes reports for the trials of `study` (see above)."""

    study: optuna.Study
    engine: sa.Engine | None  # None: Optuna's own Trial.report

    @classmethod
    def of(cls, study: optuna.Study) -> Reports:
        storage = study._storage  # no public getter
        backend = getattr(storage, "_backend", storage)  # inside Optuna's _CachedStorage
        if not isinstance(backend, optuna.storages.RDBStorage):
            return cls(study, None)
        if backend.get_current_version() not in TESTED_SCHEMA_REVISIONS:
            return cls(study, None)
        return cls(study, backend.engine)

    def write(self, reports: Sequence[Report]) -> None:
        """Stores `reports` (steps already reported by a trial are ignored, as Optuna does)."""
        new = [(t, step, float(v)) for t, step, v in reports if step not in _values(t)]
        if self.engine is None:
            for trial, step, value in new:
                trial.report(value, step)
            return
        if not new:
            return
        rows = []
        for trial, step, value in new:
            stored, value_type = _VALUES.intermediate_value_to_stored_repr(value)
            rows.append(
                {
                    "trial_id": trial._trial_id,
                    "step": step,
                    "value": stored,
                    "value_type": value_type,
                }
            )
        with self.engine.begin() as conn:
            conn.execute(_STORED, rows)
        for trial, step, value in new:
            _values(trial)[step] = value


def _values(trial: optuna.Trial) -> dict[int, float]:
    """The trial's reported values as its `Trial` keeps them (what `Trial.report` updates)."""
    values: dict[int, float] = trial._cached_frozen_trial.intermediate_values
    return values

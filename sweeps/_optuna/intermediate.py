"""Pruning reports inserted straight into Optuna's `trial_intermediate_values` table.

`Trial.report` stores each value in its own ORM session, one per trial and checkpoint.
`IntermediateValues` keeps each `Trial`'s own copy of its values up to date at once, as
`Trial.report` does (that copy is what the pruner reads), and inserts every pending value
in one statement: stored as RDBStorage stores them (NaN and ±inf as value types) and guarded
as `RDBStorage.set_trial_intermediate_value` guards them: nothing for a trial that is no
longer RUNNING, a step reported before is kept. tests/sweeps/test_reports.py compares what
Optuna reads back with what `Trial.report` stores.
"""

from __future__ import annotations

import optuna
import sqlalchemy as sa
from optuna.storages._rdb import models

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


class IntermediateValues:
    """Reported values waiting to be inserted together (see above)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._pending: list[dict[str, object]] = []

    @property
    def pending(self) -> int:
        """How many values wait for `flush`."""
        return len(self._pending)

    def add(self, trial: optuna.Trial, step: int, value: float) -> None:
        """Pending until `flush`; the trial's own copy has it now. A step the trial
        reported before is ignored, as `Trial.report` ignores it."""
        values = reported(trial)
        if step in values:
            return
        stored, value_type = _VALUES.intermediate_value_to_stored_repr(value)
        self._pending.append(
            {"trial_id": trial._trial_id, "step": step, "value": stored, "value_type": value_type}
        )
        values[step] = value

    def flush(self) -> None:
        if not self._pending:
            return
        with self.engine.begin() as conn:
            conn.execute(_STORED, self._pending)
        self._pending = []


def reported(trial: optuna.Trial) -> dict[int, float]:
    """The trial's reported values as its `Trial` keeps them (what `Trial.report` updates)."""
    values: dict[int, float] = trial._cached_frozen_trial.intermediate_values
    return values

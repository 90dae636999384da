"""Telling a round's trials in one transaction: what `Study.tell` and `Trial.set_user_attr`
store for each, written for all of them at once.

`Study.tell` reads the trial back and opens an ORM session per trial, and each user
attribute is another: a round of K trials would pay several sessions per trial. Here one
transaction writes every told trial's value (`trial_values`), user attributes
(`trial_user_attributes`) and state with its completion time (`trials`), only for trials
still RUNNING (one that another worker failed meanwhile is left as it is, as Optuna refuses
to tell it), after the sampler's `after_trial`, as `Study.tell` calls it. The values follow
Optuna's rules: a COMPLETE trial's objective; a PRUNED trial's last reported value unless
NaN; none for FAIL. tests/sweeps/test_bulk_tell.py reads both ways back through Optuna and
compares.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import optuna
import sqlalchemy as sa
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

from sweeps._optuna import Told, told_values

_TRIALS = models.TrialModel.__table__
_VALUES = models.TrialValueModel
_ATTRS = models.TrialUserAttributeModel.__table__


class BulkTeller:
    """Tells many trials of one study in one transaction (see above)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def tell(self, study: optuna.Study, told: Sequence[Told]) -> list[FrozenTrial]:
        """Returns each trial as told (the trial's own frozen copy, updated)."""
        values = [told_values(t) for t in told]
        for t, v in zip(told, values, strict=True):
            study.sampler.after_trial(study, t.trial._cached_frozen_trial, t.state, v)
        now = datetime.now(UTC).replace(tzinfo=None)  # Optuna stores naive UTC
        pairs = list(zip(told, values, strict=True))
        with self._engine.begin() as conn:
            running = _lock_running(conn, [t.trial._trial_id for t in told])
            _write(conn, [(t, v) for t, v in pairs if t.trial._trial_id in running], now)
        local = now.replace(tzinfo=UTC).astimezone().replace(tzinfo=None)  # as Optuna reads it
        return [_as_told(t, v, local, t.trial._trial_id in running) for t, v in pairs]


def _lock_running(conn: sa.Connection, trial_ids: list[int]) -> set[int]:
    """The trials still RUNNING, locked (PostgreSQL) against a concurrent state change."""
    query = sa.select(_TRIALS.c.trial_id).where(
        _TRIALS.c.trial_id.in_(trial_ids), _TRIALS.c.state == TrialState.RUNNING
    )
    if conn.dialect.name != "sqlite":  # SQLite's write transaction locks the database
        query = query.with_for_update()
    return set(conn.execute(query).scalars())


def _write(conn: sa.Connection, live: list[tuple[Told, list[float] | None]], now: datetime) -> None:
    value_rows = []
    for t, values in live:
        for objective, value in enumerate(values or ()):
            stored, value_type = _VALUES.value_to_stored_repr(value)
            value_rows.append(
                {
                    "trial_id": t.trial._trial_id,
                    "objective": objective,
                    "value": stored,
                    "value_type": value_type,
                }
            )
    if value_rows:
        conn.execute(sa.insert(_VALUES.__table__), value_rows)
    attr_rows = [
        {"trial_id": t.trial._trial_id, "key": key, "value_json": json.dumps(value)}
        for t, _ in live
        for key, value in t.user_attrs.items()
    ]
    if attr_rows:  # replaced, as set_trial_user_attr upserts
        conn.execute(
            sa.delete(_ATTRS).where(
                _ATTRS.c.trial_id.in_({row["trial_id"] for row in attr_rows}),
                _ATTRS.c.key.in_({row["key"] for row in attr_rows}),
            )
        )
        conn.execute(sa.insert(_ATTRS), attr_rows)
    if live:
        conn.execute(
            sa.update(_TRIALS)
            .where(_TRIALS.c.trial_id == sa.bindparam("id"))
            .values(state=sa.bindparam("new_state"), datetime_complete=now),
            [{"id": t.trial._trial_id, "new_state": t.state} for t, _ in live],
        )


def _as_told(t: Told, values: list[float] | None, completed: datetime, stored: bool) -> FrozenTrial:
    frozen = t.trial._cached_frozen_trial
    if not stored:  # another worker ended it first: what the storage has
        return t.trial.study._storage.get_trial(t.trial._trial_id)
    frozen.state = t.state
    frozen.values = values
    frozen.datetime_complete = completed
    frozen.user_attrs = {**frozen.user_attrs, **t.user_attrs}
    return frozen

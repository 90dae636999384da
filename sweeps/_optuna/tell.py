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

A tell comes in three steps, so that a recording process can write what the study process
decided: `BulkTeller.ended` (the sampler told, the values computed: `TellRow`s, which
pickle), `.write` (the transaction, wherever it runs), `.as_told` (the trials as told).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

from sweeps._optuna import Told, as_read_back, told_values
from tracking.db import insert_rows, update_rows

_TRIALS = models.TrialModel.__table__
_VALUES = models.TrialValueModel
_ATTRS = models.TrialUserAttributeModel.__table__


@dataclass(frozen=True)
class TellRow:
    """One trial's end as the storage keeps it."""

    trial_id: int
    state: TrialState
    values: list[float] | None
    user_attrs: Mapping[str, Any]


@dataclass(frozen=True)
class Written:
    """What `BulkTeller.write` wrote: the trials it told (those still RUNNING), when."""

    trial_ids: frozenset[int]
    completed: datetime  # naive UTC, as stored


class BulkTeller:
    """Tells many trials of one study in one transaction (see above)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def close(self) -> None:
        """Close the connections of an engine made for this teller alone."""
        self._engine.dispose()

    def tell(self, study: optuna.Study, told: Sequence[Told]) -> list[FrozenTrial]:
        """Returns each trial as told (the trial's own frozen copy, updated)."""
        rows = self.ended(study, told)
        return self.as_told(told, rows, self.write(rows))

    @staticmethod
    def ended(study: optuna.Study, told: Sequence[Told]) -> list[TellRow]:
        """The rows to write for `told`, the sampler told first (as `Study.tell` does)."""
        rows = []
        for t in told:
            values = told_values(t)
            study.sampler.after_trial(study, t.trial._cached_frozen_trial, t.state, values)
            rows.append(TellRow(t.trial._trial_id, t.state, values, t.user_attrs))
        return rows

    def write(self, rows: Sequence[TellRow]) -> Written:
        """One transaction: the rows of the trials still RUNNING."""
        now = datetime.now(UTC).replace(tzinfo=None)  # Optuna stores naive UTC
        with self._engine.begin() as conn:
            running = _lock_running(conn, [row.trial_id for row in rows])
            _write(conn, [row for row in rows if row.trial_id in running], now)
        return Written(frozenset(running), now)

    @staticmethod
    def as_told(
        told: Sequence[Told], rows: Sequence[TellRow], written: Written
    ) -> list[FrozenTrial]:
        """Each trial as `written` left it: the trial's own frozen copy, updated, or what
        the storage has where another worker ended it first."""
        local = as_read_back(written.completed)
        return [
            _as_told(t, row, local, row.trial_id in written.trial_ids)
            for t, row in zip(told, rows, strict=True)
        ]


def _lock_running(conn: sa.Connection, trial_ids: list[int]) -> set[int]:
    """The trials still RUNNING, locked (PostgreSQL) against a concurrent state change."""
    query = sa.select(_TRIALS.c.trial_id).where(
        _TRIALS.c.trial_id.in_(trial_ids), _TRIALS.c.state == TrialState.RUNNING
    )
    if conn.dialect.name != "sqlite":  # SQLite's write transaction locks the database
        query = query.with_for_update()
    return set(conn.execute(query).scalars())


def _write(conn: sa.Connection, live: list[TellRow], now: datetime) -> None:
    # Below SQLAlchemy's per-row parameter dicts (`tracking.db`), through the columns' types.
    value_rows = [
        (row.trial_id, objective, *_VALUES.value_to_stored_repr(value))
        for row in live
        for objective, value in enumerate(row.values or ())
    ]
    insert_rows(conn, _VALUES.__table__, _VALUE_COLUMNS, value_rows, convert=True)
    attr_rows = [
        (row.trial_id, key, json.dumps(value))
        for row in live
        for key, value in row.user_attrs.items()
    ]
    if attr_rows:  # replaced, as set_trial_user_attr upserts
        conn.execute(
            sa.delete(_ATTRS).where(
                _ATTRS.c.trial_id.in_({trial_id for trial_id, _, _ in attr_rows}),
                _ATTRS.c.key.in_({key for _, key, _ in attr_rows}),
            )
        )
        insert_rows(conn, _ATTRS, _ATTR_COLUMNS, attr_rows)
    update_rows(
        conn,
        _TRIALS,
        ["state", "datetime_complete"],
        "trial_id",
        [(row.state, now, row.trial_id) for row in live],
        convert=True,
    )


_VALUE_COLUMNS = ("trial_id", "objective", "value", "value_type")
_ATTR_COLUMNS = ("trial_id", "key", "value_json")


def _as_told(t: Told, row: TellRow, completed: datetime, stored: bool) -> FrozenTrial:
    frozen = t.trial._cached_frozen_trial
    if not stored:  # another worker ended it first: what the storage has
        return t.trial.study._storage.get_trial(t.trial._trial_id)
    frozen.state = t.state
    frozen.values = row.values
    frozen.datetime_complete = completed
    frozen.user_attrs = {**frozen.user_attrs, **t.user_attrs}
    return frozen

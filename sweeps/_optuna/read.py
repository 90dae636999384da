"""A study's trials read in bulk, and its finished trials kept across rounds, each read from
the storage at most once.

`read_trials` builds FrozenTrials from one Core query per table (trials, params, values,
intermediate values, user and system attributes), as `RDBStorage.get_all_trials` builds them
from ORM objects, without the ORM's identity maps and selectin loads per trial
(tests/sweeps/test_read_trials.py compares the two).

Optuna's `_CachedStorage` keeps the finished trials it read, but the trials a round creates
and tells through `sweeps._optuna.ask` and `.tell` bypass it, so every round would read the
previous round's trials back through the ORM, one by one. `TrialCache` is told the trials
this process ended (`add`); once a round, one Core query lists the study's trials above the
highest trial id below which every trial is known finished, and only the finished ones it
does not know (other workers') are read, through the storage. Finished trials do not change,
so nothing known is read again; running and waiting trials are listed, never kept.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Container, Iterable
from functools import lru_cache
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

from sweeps._optuna import as_read_back

_TRIALS = models.TrialModel.__table__
_PARAMS = models.TrialParamModel.__table__
_VALUES = models.TrialValueModel
_STEPS = models.TrialIntermediateValueModel
_USER = models.TrialUserAttributeModel.__table__
_SYSTEM = models.TrialSystemAttributeModel.__table__
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class TrialCache:
    """The finished trials of `study` (see above)."""

    def __init__(self, engine: sa.Engine, study: optuna.Study) -> None:
        self._engine = engine
        self._study = study
        self._finished: dict[int, FrozenTrial] = {}  # by trial id
        self._by_number: list[FrozenTrial] | None = []  # sorted view, None when stale
        self._watermark = -1  # every trial id at or below it is in _finished
        self.waiting = False  # whether the last refresh saw WAITING (enqueued) trials

    def add(self, trials: Iterable[FrozenTrial]) -> None:
        """Trials this process ended, as it told them."""
        for trial in trials:
            if trial.state in FINISHED:
                self._finished[trial._trial_id] = trial
                self._by_number = None

    def refresh(self) -> None:
        """Learn what the other workers finished since the last refresh."""
        query = sa.select(_TRIALS.c.trial_id, _TRIALS.c.state).where(
            _TRIALS.c.study_id == self._study._study_id,
            _TRIALS.c.trial_id > self._watermark,
        )
        with self._engine.connect() as conn:
            rows = sorted((row[0], row[1]) for row in conn.execute(query))
        unknown = [i for i, state in rows if state in FINISHED and i not in self._finished]
        if unknown:  # a resumed study's history, or what other workers finished
            self.add(read_trials(self._engine, self._study._study_id, ids=unknown))
        self.waiting = any(state is TrialState.WAITING for _, state in rows)
        for trial_id, _ in rows:
            if trial_id not in self._finished:
                break
            self._watermark = trial_id

    def finished(self, states: Container[TrialState] = FINISHED) -> list[FrozenTrial]:
        """The known finished trials in `states`, by number."""
        if self._by_number is None:
            self._by_number = sorted(self._finished.values(), key=lambda t: t.number)
        return [t for t in self._by_number if t.state in states]


def state_counts(engine: sa.Engine, study: optuna.Study) -> dict[str, int]:
    """The number of the study's trials in each state, by state name, in one query."""
    query = (
        sa.select(_TRIALS.c.state, sa.func.count())
        .where(_TRIALS.c.study_id == study._study_id)
        .group_by(_TRIALS.c.state)
    )
    with engine.connect() as conn:
        return {row[0].name: int(row[1]) for row in conn.execute(query)}


def read_trials(
    engine: sa.Engine,
    study_id: int,
    *,
    states: Collection[TrialState] | None = None,
    ids: Collection[int] | None = None,
    user_attrs: bool = True,
) -> list[FrozenTrial]:
    """The study's trials (in `states`, with these `ids`, where given), by id, exactly as
    the storage's `get_all_trials` builds them (see above); without their user attributes
    where the reader has no use for them (a study's are its records: most of the read)."""
    if ids is None:
        return _read(engine, study_id, states, None, user_attrs)
    # In chunks: databases bound the parameters of one statement (SQLite once at 999).
    chosen = sorted(ids)
    return [
        trial
        for i in range(0, len(chosen), _CHUNK)
        for trial in _read(engine, study_id, states, chosen[i : i + _CHUNK], user_attrs)
    ]


_CHUNK = 900


def _read(
    engine: sa.Engine,
    study_id: int,
    states: Collection[TrialState] | None,
    ids: list[int] | None,
    user_attrs: bool,
) -> list[FrozenTrial]:
    where = [_TRIALS.c.study_id == study_id]
    if states is not None:
        where.append(_TRIALS.c.state.in_(list(states)))
    if ids is not None:
        where.append(_TRIALS.c.trial_id.in_(ids))

    def children(table: sa.Table, *columns: str) -> dict[int, list[tuple[Any, ...]]]:
        # Joined to the trials rather than listed by id: the same filter, whatever its size.
        query = (
            sa.select(table.c.trial_id, *(table.c[c] for c in columns))
            .join(_TRIALS, _TRIALS.c.trial_id == table.c.trial_id)
            .where(*where)
            .order_by(table.primary_key.columns.values()[0])  # insertion order, as the ORM
        )
        rows: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
        for row in conn.execute(query):
            rows[row[0]].append(row)
        return rows

    with engine.connect() as conn:
        heads = conn.execute(
            sa.select(
                _TRIALS.c.trial_id,
                _TRIALS.c.number,
                _TRIALS.c.state,
                _TRIALS.c.datetime_start,
                _TRIALS.c.datetime_complete,
            )
            .where(*where)
            .order_by(_TRIALS.c.trial_id)
        ).all()
        params = children(_PARAMS, "param_name", "param_value", "distribution_json")
        values = children(_VALUES.__table__, "objective", "value", "value_type")
        steps = children(_STEPS.__table__, "step", "intermediate_value", "intermediate_value_type")
        user = children(_USER, "key", "value_json") if user_attrs else {}
        system = children(_SYSTEM, "key", "value_json")
    trials = []
    for trial_id, number, state, start, complete in heads:
        dists = {name: _distribution(js) for _, name, _, js in params.get(trial_id, ())}
        objective_values = values.get(trial_id)
        trials.append(
            FrozenTrial(
                number=number,
                state=state,
                value=None,
                values=_objective_values(objective_values) if objective_values else None,
                datetime_start=None if start is None else as_read_back(start),
                datetime_complete=None if complete is None else as_read_back(complete),
                params={
                    name: dists[name].to_external_repr(value)
                    for _, name, value, _ in params.get(trial_id, ())
                },
                distributions=dists,
                user_attrs={key: json.loads(js) for _, key, js in user.get(trial_id, ())},
                system_attrs={key: json.loads(js) for _, key, js in system.get(trial_id, ())},
                intermediate_values={
                    step: _STEPS.stored_repr_to_intermediate_value(value, kind)
                    for _, step, value, kind in steps.get(trial_id, ())
                },
                trial_id=trial_id,
            )
        )
    return trials


@lru_cache(maxsize=256)
def _distribution(js: str) -> BaseDistribution:
    """A stored distribution, parsed once: a study's trials share a handful. Nothing
    changes a distribution, so one instance may serve every trial."""
    return json_to_distribution(js)


def _objective_values(rows: list[tuple[Any, ...]]) -> list[float]:
    values = [0.0] * len(rows)
    for _, objective, value, kind in rows:
        values[objective] = _VALUES.stored_repr_to_value(value, kind)
    return values


class Snapshot(optuna.Study):
    """`study` with a fixed list of trials: every trial read once, in bulk (`read`), or
    the trials a process already holds. Its `get_trials` answers from that list, without
    copies whatever `deepcopy` says. For readers that only look, several times over, such
    as Optuna's plots (which ask for deep copies of every trial and never read user
    attributes); the study's other methods reach the storage as usual."""

    def __init__(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        super().__init__(study.study_name, study._storage, study.sampler, study.pruner)
        self._read = trials

    @classmethod
    def read(cls, engine: sa.Engine, study: optuna.Study, *, user_attrs: bool) -> Snapshot:
        """Every trial of `study` read now, without their user attributes unless asked."""
        return cls(study, read_trials(engine, study._study_id, user_attrs=user_attrs))

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return [t for t in self._read if states is None or t.state in states]

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        return self.get_trials(deepcopy, states)


def share_counts(
    engine: sa.Engine, study: optuna.Study, key: str, value_json: str, reused_key: str
) -> tuple[int, int]:
    """How many of the study's finished trials have the user attribute `key` =
    `value_json` (a share's, `sweeps.shares`), and how many of those also `reused_key`:
    one query, the attribute rows read for no other trial."""
    mine = (
        sa.select(_TRIALS.c.trial_id)
        .join(_USER, _USER.c.trial_id == _TRIALS.c.trial_id)
        .where(
            _TRIALS.c.study_id == study._study_id,
            _TRIALS.c.state.in_(FINISHED),
            _USER.c.key == key,
            _USER.c.value_json == value_json,
        )
        .subquery()
    )
    reused = sa.exists().where(_USER.c.trial_id == mine.c.trial_id, _USER.c.key == reused_key)
    query = sa.select(sa.func.count(), sa.func.count().filter(reused)).select_from(mine)
    with engine.connect() as conn:
        told, with_reuse = conn.execute(query).one()
    return int(told), int(with_reuse)

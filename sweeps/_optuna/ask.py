"""Creating a round's trials in one transaction: what `Study.ask` and the `suggest_*` calls
store for each, written for all of them at once.

`Study.ask` creates a trial in one ORM session and reads it back, and each suggested
parameter is another session: for a `--batch` round, several sessions per trial before any
of them trains (docs/performance.md has the figures). When a round's parameters are known before it
is asked (`sweeps.sampling.RoundSampler.plan`), one transaction inserts the K trials
(RUNNING, started now), numbers them as Optuna does (the count of the study's trials created
before each, under the same lock on the study's row that Optuna's `_create_new_trial` takes,
so numbers stay unique among concurrent workers) and inserts their parameters (internal
representation and distribution JSON). The `optuna.Trial` objects are then built from what
was written instead of read back, with the attributes `Trial.__init__` sets
(tests/sweeps/test_bulk_ask.py compares them with a real one, so a change in Optuna fails a
test rather than a study).

A grid study's rounds are claimed instead (`BulkAsker.claim`): which points the study's
trials hold already is read under the same lock as the new trials are created, so that
two workers (or two rounds) never take one point, and a round past the last free point
comes back short or empty.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

from sweeps._optuna import as_read_back
from tracking.db import insert_rows, update_rows

_STUDIES = models.StudyModel.__table__
_TRIALS = models.TrialModel.__table__
_PARAMS = models.TrialParamModel.__table__
_SYSTEM_ATTRS = models.TrialSystemAttributeModel.__table__
_BEATS = models.TrialHeartbeatModel.__table__
# What Trial.__init__ (Optuna 3.x to 5.0) sets; checked against a real Trial by the tests.
TRIAL_ATTRIBUTES = frozenset(
    {
        "study",
        "_trial_id",
        "storage",
        "_cached_frozen_trial",
        "relative_search_space",
        "_relative_params",
        "_fixed_params",
    }
)

Params = Mapping[str, Any]
Distributions = Mapping[str, BaseDistribution]
_FIXED_PARAMS = "fixed_params"  # system attribute of an enqueued trial (Study.enqueue_trial)
_PointKey = frozenset[tuple[str, float]]  # a point's parameters in internal representation


class BulkAsker:
    """Creates many trials of one study with known parameters in one transaction."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def ask(
        self,
        study: optuna.Study,
        planned: Sequence[tuple[Params, Distributions]],
        *,
        heartbeat: bool = False,
    ) -> list[optuna.Trial]:
        """RUNNING trials with these parameters, in order, as `study.ask()` + suggestions
        would leave them; with `heartbeat`, each with its first heartbeat too."""
        if not planned:
            return []
        study_id = study._study_id
        started = datetime.now(UTC).replace(tzinfo=None)  # Optuna stores naive UTC
        with self._engine.begin() as conn:
            _lock_study(conn, study_id)
            ids = _insert_trials(conn, study_id, len(planned), started)
            numbers = _number(conn, study_id, ids)
            _write_params(conn, ids, planned, heartbeat)
        return _trials(study, ids, numbers, planned, started)

    def ask_balanced(
        self,
        study: optuna.Study,
        proposals: Mapping[str, Sequence[tuple[Params, Distributions]]],
        order: Sequence[str],
        k: int,
        *,
        heartbeat: bool = False,
    ) -> list[optuna.Trial]:
        """k RUNNING trials, each of the penalty with the fewest trials of the study so
        far (ties to the first in `order`), with the next of that penalty's `proposals`
        (k at least for each). The study's trials per penalty are counted under the
        study's lock, in the transaction that creates the new ones: workers asking at
        once see each other's trials (`sweeps.sampling.balanced`)."""
        from sweeps.sampling import balanced

        study_id = study._study_id
        started = datetime.now(UTC).replace(tzinfo=None)
        with self._engine.begin() as conn:
            _lock_study(conn, study_id)
            counts = _penalty_counts(conn, study_id, proposals)
            left = {p: list(points) for p, points in proposals.items()}
            planned = [left[p].pop(0) for p in balanced(counts, order, k)]
            ids = _insert_trials(conn, study_id, len(planned), started)
            numbers = _number(conn, study_id, ids)
            _write_params(conn, ids, planned, heartbeat)
        return _trials(study, ids, numbers, planned, started)

    def claim(
        self,
        study: optuna.Study,
        points: Sequence[tuple[Params, Distributions]],
        k: int,
        *,
        heartbeat: bool = False,
    ) -> list[optuna.Trial]:
        """Up to k RUNNING trials of those `points` that no trial of the study holds: first
        the study's retries waiting to run (each the point of a trial that failed), then
        free points in the order given; none once every point is taken. What is taken is
        read under the study's lock, in the transaction that creates the trials."""
        study_id = study._study_id
        started = datetime.now(UTC).replace(tzinfo=None)
        by_params = {_params_key(params): (params, dists) for params, dists in points}
        with self._engine.begin() as conn:
            _lock_study(conn, study_id)
            popped = _pop_waiting(conn, study_id, k, started, by_params)
            taken = _taken(conn, study_id)
            free = [p for p in points if _point_key(*p) not in taken][: k - len(popped)]
            ids = _insert_trials(conn, study_id, len(free), started) if free else []
            numbers = _number(conn, study_id, ids) if ids else {}
            numbers.update({trial_id: number for trial_id, number, _ in popped})
            ids = [trial_id for trial_id, _, _ in popped] + ids
            planned = [point for _, _, point in popped] + free
            _write_params(conn, ids, planned, heartbeat)
        return _trials(study, ids, numbers, planned, started)


def _trials(
    study: optuna.Study,
    ids: list[int],
    numbers: Mapping[int, int],
    planned: Sequence[tuple[Params, Distributions]],
    started: datetime,
) -> list[optuna.Trial]:
    # Built from what was written, as Optuna would read the trials back.
    local = as_read_back(started)
    trials = []
    for trial_id, (params, dists) in zip(ids, planned, strict=True):
        frozen = FrozenTrial(
            number=numbers[trial_id],
            state=TrialState.RUNNING,
            value=None,
            datetime_start=local,
            datetime_complete=None,
            params=dict(params),
            distributions=dict(dists),
            user_attrs={},
            system_attrs={},
            intermediate_values={},
            trial_id=trial_id,
        )
        trials.append(_as_trial(study, frozen))
    return trials


def _write_params(
    conn: sa.Connection,
    ids: list[int],
    planned: Sequence[tuple[Params, Distributions]],
    heartbeat: bool,
) -> None:
    """The trials' parameter rows, and with `heartbeat` their first heartbeats."""
    if not ids:
        return
    insert_rows(conn, _PARAMS, _PARAM_COLUMNS, _param_rows(ids, planned))
    if heartbeat:
        now = conn.execute(sa.select(sa.func.now())).scalar_one()
        insert_rows(conn, _BEATS, _BEAT_COLUMNS, [(i, now) for i in ids], convert=True)


def _penalty_counts(
    conn: sa.Connection,
    study_id: int,
    proposals: Mapping[str, Sequence[tuple[Params, Distributions]]],
) -> dict[str, int]:
    """The study's trials per penalty, in any state, from their `penalty` parameter rows
    (in the internal representation of the penalty's distribution, the same in every
    trial of a study: its index among the choices)."""
    dist = next(dists["penalty"] for points in proposals.values() for _, dists in points)
    rows = conn.execute(
        sa.select(_PARAMS.c.param_value, sa.func.count())
        .join(_TRIALS, _TRIALS.c.trial_id == _PARAMS.c.trial_id)
        .where(_TRIALS.c.study_id == study_id, _PARAMS.c.param_name == "penalty")
        .group_by(_PARAMS.c.param_value)
    )
    return {str(dist.to_external_repr(value)): int(n) for value, n in rows}


def _lock_study(conn: sa.Connection, study_id: int) -> None:
    """Serialize trial creation in this study with other workers (as Optuna does). On
    SQLite a write takes the database's one write lock: done first, before anything is
    read, what the transaction reads is what the writers before it committed."""
    if conn.dialect.name == "sqlite":
        conn.execute(
            sa.update(_STUDIES)
            .where(_STUDIES.c.study_id == study_id)
            .values(study_name=_STUDIES.c.study_name)
        )
        return
    conn.execute(
        sa.select(_STUDIES.c.study_id).where(_STUDIES.c.study_id == study_id).with_for_update()
    )


def _params_key(params: Params) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


def _point_key(params: Params, dists: Distributions) -> _PointKey:
    return frozenset((name, float(dists[name].to_internal_repr(v))) for name, v in params.items())


def _taken(conn: sa.Connection, study_id: int) -> set[_PointKey]:
    """The points the study's trials hold, in any state (a WAITING retry holds none)."""
    rows = conn.execute(
        sa.select(_PARAMS.c.trial_id, _PARAMS.c.param_name, _PARAMS.c.param_value)
        .join(_TRIALS, _TRIALS.c.trial_id == _PARAMS.c.trial_id)
        .where(_TRIALS.c.study_id == study_id)
    )
    points: dict[int, set[tuple[str, float]]] = {}
    for trial_id, name, value in rows:
        points.setdefault(trial_id, set()).add((name, float(value)))
    return {frozenset(point) for point in points.values()}


def _pop_waiting(
    conn: sa.Connection,
    study_id: int,
    k: int,
    started: datetime,
    points: Mapping[tuple[tuple[str, Any], ...], tuple[Params, Distributions]],
) -> list[tuple[int, int, tuple[Params, Distributions]]]:
    """Up to k of the study's WAITING trials whose fixed parameters are one of `points`,
    set RUNNING as `Study.ask` pops them: (id, number, point) of each. A trial popped by
    another process meanwhile is not updated here (its state is checked as it is set)."""
    waiting = conn.execute(
        sa.select(_TRIALS.c.trial_id, _TRIALS.c.number, _SYSTEM_ATTRS.c.value_json)
        .join(_SYSTEM_ATTRS, _SYSTEM_ATTRS.c.trial_id == _TRIALS.c.trial_id)
        .where(
            _TRIALS.c.study_id == study_id,
            _TRIALS.c.state == TrialState.WAITING,
            _SYSTEM_ATTRS.c.key == _FIXED_PARAMS,
        )
        .order_by(_TRIALS.c.trial_id)
    ).all()
    popped: list[tuple[int, int, tuple[Params, Distributions]]] = []
    for trial_id, number, fixed in waiting:
        if len(popped) == k:
            break
        point = points.get(_params_key(json.loads(fixed)))
        if point is None:
            continue  # not a point of this grid: left to `Study.ask`
        done = conn.execute(
            sa.update(_TRIALS)
            .where(_TRIALS.c.trial_id == trial_id, _TRIALS.c.state == TrialState.WAITING)
            .values(state=TrialState.RUNNING, datetime_start=started)
        )
        if done.rowcount == 1:
            popped.append((int(trial_id), int(number), point))
    return popped


def _insert_trials(conn: sa.Connection, study_id: int, k: int, started: datetime) -> list[int]:
    rows = [{"study_id": study_id, "state": TrialState.RUNNING, "datetime_start": started}] * k
    inserted = conn.execute(
        sa.insert(_TRIALS).returning(_TRIALS.c.trial_id, sort_by_parameter_order=True), rows
    )
    return list(inserted.scalars())


def _number(conn: sa.Connection, study_id: int, ids: list[int]) -> dict[int, int]:
    """Each new trial's number: the study's trials created before it (Optuna's rule),
    from one count below the first new trial and the ids from there on."""
    first = min(ids)
    below = conn.execute(
        sa.select(sa.func.count()).where(_TRIALS.c.study_id == study_id, _TRIALS.c.trial_id < first)
    ).scalar_one()
    later = conn.execute(
        sa.select(_TRIALS.c.trial_id)
        .where(_TRIALS.c.study_id == study_id, _TRIALS.c.trial_id >= first)
        .order_by(_TRIALS.c.trial_id)
    ).scalars()
    new = set(ids)
    numbers = {
        int(trial_id): below + position
        for position, trial_id in enumerate(later)
        if trial_id in new
    }
    update_rows(conn, _TRIALS, ["number"], "trial_id", [(n, i) for i, n in numbers.items()])
    return numbers


_PARAM_COLUMNS = ("trial_id", "param_name", "param_value", "distribution_json")
_BEAT_COLUMNS = ("trial_id", "heartbeat")


def _param_rows(
    ids: list[int], planned: Sequence[tuple[Params, Distributions]]
) -> list[tuple[int, str, float, str]]:
    as_json: dict[BaseDistribution, str] = {}  # a round's trials share a few distributions
    rows = []
    for trial_id, (params, dists) in zip(ids, planned, strict=True):
        for name, value in params.items():
            dist = dists[name]
            text = as_json.get(dist)
            if text is None:
                text = as_json[dist] = distribution_to_json(dist)
            rows.append((trial_id, name, dist.to_internal_repr(value), text))
    return rows


def _as_trial(study: optuna.Study, frozen: FrozenTrial) -> optuna.Trial:
    """`optuna.Trial(study, trial_id)` without reading the trial back: the same attributes
    set from what was just written, and the sampler told, as Trial.__init__ does."""
    trial = optuna.Trial.__new__(optuna.Trial)
    trial.study = study
    trial._trial_id = frozen._trial_id
    trial.storage = study._storage
    trial._cached_frozen_trial = frozen
    trial.relative_search_space = None
    trial._relative_params = None
    trial._fixed_params = {}
    study.sampler.before_trial(study, frozen)
    return trial

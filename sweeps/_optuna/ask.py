"""Creating a round's trials in one transaction: what `Study.ask` and the `suggest_*` calls
store for each, written for all of them at once.

`Study.ask` creates a trial in one ORM session and reads it back, and each suggested
parameter is another session: for a `--batch` round, several sessions per trial before any
of them trains (the README has the figures). When a round's parameters are known before it
is asked (`sweeps.sampling.RoundSampler.plan`), one transaction inserts the K trials
(RUNNING, started now), numbers them as Optuna does (the count of the study's trials created
before each, under the same lock on the study's row that Optuna's `_create_new_trial` takes,
so numbers stay unique among concurrent workers) and inserts their parameters (internal
representation and distribution JSON). The `optuna.Trial` objects are then built from what
was written instead of read back, with the attributes `Trial.__init__` sets
(tests/sweeps/test_bulk_ask.py compares them with a real one, so a change in Optuna fails a
test rather than a study).
"""

from __future__ import annotations

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
            insert_rows(conn, _PARAMS, _PARAM_COLUMNS, _param_rows(ids, planned))
            if heartbeat:
                now = conn.execute(sa.select(sa.func.now())).scalar_one()
                insert_rows(conn, _BEATS, _BEAT_COLUMNS, [(i, now) for i in ids], convert=True)
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


def _lock_study(conn: sa.Connection, study_id: int) -> None:
    """Serialize trial creation in this study with other workers (as Optuna does); SQLite
    serializes writers itself, from the first insert on."""
    if conn.dialect.name != "sqlite":
        conn.execute(
            sa.select(_STUDIES.c.study_id).where(_STUDIES.c.study_id == study_id).with_for_update()
        )


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

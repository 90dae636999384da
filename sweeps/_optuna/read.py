"""A study's finished trials across rounds, each read from the storage at most once.

Optuna's `_CachedStorage` keeps the finished trials it read, but the trials a round creates
and tells through `sweeps._optuna.ask` and `.tell` bypass it, so every round would read the
previous round's trials back through the ORM, one by one. `TrialCache` is told the trials
this process ended (`add`); once a round, one Core query lists the study's trials above the
highest trial id below which every trial is known finished, and only the finished ones it
does not know (other workers') are read, through the storage. Finished trials do not change,
so nothing known is read again; running and waiting trials are listed, never kept.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

import optuna
import sqlalchemy as sa
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

_TRIALS = models.TrialModel.__table__
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
        storage = self._study._storage  # no public getter
        unknown = [i for i, state in rows if state in FINISHED and i not in self._finished]
        self.add(storage.get_trial(trial_id) for trial_id in unknown)
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

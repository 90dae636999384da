"""Trials whose worker is gone, found in Optuna's tables: it has no public query for them.

Stale trials are those `optuna.storages.fail_stale_trials` fails (RDBStorage's own
`_get_stale_trial_ids`); beatless ones, RUNNING without any heartbeat row, it never sees.
"""

from __future__ import annotations

import optuna
import sqlalchemy as sa
from optuna.storages._rdb import models

_TRIALS = models.TrialModel.__table__
_BEATS = models.TrialHeartbeatModel.__table__


class LostTrialIds:
    """Ids of a study's RUNNING trials that are stale, or have no heartbeat at all."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def stale(self, storage: optuna.storages.RDBStorage, study_id: int) -> list[int]:
        ids: list[int] = storage._get_stale_trial_ids(study_id)
        return ids

    def beatless(self, study_id: int) -> set[int]:
        query = (
            sa.select(_TRIALS.c.trial_id)
            .select_from(_TRIALS.outerjoin(_BEATS, _BEATS.c.trial_id == _TRIALS.c.trial_id))
            .where(
                _TRIALS.c.study_id == study_id,
                _TRIALS.c.state == optuna.trial.TrialState.RUNNING,
                _BEATS.c.trial_id.is_(None),
            )
        )
        with self._engine.connect() as conn:
            return set(conn.execute(query).scalars())

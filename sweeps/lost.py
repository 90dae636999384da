"""Trials whose worker is gone: RUNNING in Optuna, and nobody is training them.

Optuna fails a RUNNING trial once its heartbeat is stale (`fail_stale_trials`, which every
worker runs before each trial), but only a trial that has a heartbeat. A worker killed
between creating a trial and its first beat (milliseconds in `study.optimize`; the time to
ask K trials in `--batch` mode) leaves one that stays RUNNING forever, uncounted and never
retried. Here such a trial counts as lost once it started longer ago than the grace
period, like a stale one, and is failed the way Optuna fails stale trials: state FAIL, then
the storage's stale-trial callback (the recorder writes its row and run, then Optuna's
retry enqueues its parameters again).
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState

# Optuna's own tables (optuna.storages._rdb.models): it has no public "trials without a
# heartbeat" query.
_BEATLESS = sa.text(
    "SELECT t.trial_id FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
    "WHERE t.study_id = :study_id AND t.state = 'RUNNING' AND h.trial_id IS NULL"
)


def lost_trials(study: optuna.Study, storage: optuna.storages.RDBStorage) -> list[FrozenTrial]:
    """RUNNING trials with a stale heartbeat, or none and a start older than the grace."""
    if storage.heartbeat_interval is None:
        return []
    grace = timedelta(seconds=storage.grace_period or 2 * storage.heartbeat_interval)
    # Private, like Optuna's own fail_stale_trials uses them: there is no public API.
    study_id = study._study_id
    lost = {i: storage.get_trial(i) for i in storage._get_stale_trial_ids(study_id)}
    with storage.engine.connect() as conn:
        beatless = set(conn.execute(_BEATLESS, {"study_id": study_id}).scalars())
    # Optuna stores naive local times (datetime.now()) for datetime_start.
    cutoff = datetime.now() - grace
    for trial_id in beatless:
        trial = storage.get_trial(trial_id)
        if trial.datetime_start is None or trial.datetime_start < cutoff:
            lost[trial_id] = trial
    return sorted(lost.values(), key=lambda t: t.number)


def fail_lost_trials(study: optuna.Study, storage: optuna.storages.RDBStorage) -> list[int]:
    """Fails every lost trial (see `fail_trial`); returns the numbers this call failed."""
    return [t.number for t in lost_trials(study, storage) if fail_trial(study, storage, t)]


def fail_trial(
    study: optuna.Study, storage: optuna.storages.RDBStorage, trial: FrozenTrial
) -> bool:
    """Sets a lost trial FAIL and runs the storage's stale-trial callback on it.

    False when it was finished meanwhile (by its worker after all, or failed by another
    process, which then ran the callback).
    """
    trial_id = trial._trial_id
    try:
        if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    callback = storage.get_heartbeat_stale_trial_callback()
    if callback is not None:
        callback(study, copy.deepcopy(storage.get_trial(trial_id)))
    return True

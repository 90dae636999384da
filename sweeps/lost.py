"""Trials whose worker is gone: RUNNING in Optuna, and nobody is training them.

Optuna fails a RUNNING trial once its heartbeat is stale (`fail_stale_trials`, which every
worker runs before each trial), but only a trial that has a heartbeat. A worker killed
between creating a trial and its first beat (the instant after `ask` in `study.optimize`;
the time to ask K trials in `--batch` mode) leaves one that stays RUNNING forever,
uncounted and never retried. Here such a trial counts as lost once it started longer ago
than the grace period, like a stale one, and is failed the way Optuna fails stale trials:
state FAIL, then the storage's stale-trial callback (the recorder writes its row and run,
then Optuna's retry enqueues its parameters again).

Finding them reads Optuna's tables (`sweeps._optuna.lost`). Where that is not allowed
(`sweeps._optuna.fenced`: an untested schema, a private name gone, SWEEPS_OPTUNA_PUBLIC=1)
no trial is listed as lost and failing them is Optuna's own `fail_stale_trials`: stale
trials are still failed and retried, beatless ones are not.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState

from sweeps._optuna import fenced, frozen_trial_id, study_id

if TYPE_CHECKING:
    from sweeps._optuna.lost import LostTrialIds

WHAT = "finding lost trials"


def lost_trials(study: optuna.Study, storage: optuna.storages.RDBStorage) -> list[FrozenTrial]:
    """RUNNING trials with a stale heartbeat, or none and a start older than the grace
    (none at all where Optuna's tables may not be read: see above)."""
    if storage.heartbeat_interval is None:
        return []
    finder = fenced(study, WHAT, _finder, storage)
    if finder is None:
        return []
    grace = timedelta(seconds=storage.grace_period or 2 * storage.heartbeat_interval)
    sid = study_id(study, storage)
    lost = {i: storage.get_trial(i) for i in finder.stale(storage, sid)}
    # Optuna stores naive local times (datetime.now()) for datetime_start.
    cutoff = datetime.now() - grace
    for trial_id in finder.beatless(sid):
        trial = storage.get_trial(trial_id)
        if trial.datetime_start is None or trial.datetime_start < cutoff:
            lost[trial_id] = trial
    return sorted(lost.values(), key=lambda t: t.number)


def fail_lost_trials(study: optuna.Study, storage: optuna.storages.RDBStorage) -> list[int]:
    """Fails every lost trial (see `fail_trial`); returns the numbers this call failed."""
    if storage.heartbeat_interval is None:
        return []
    if fenced(study, WHAT, _finder, storage) is None:
        return _fail_stale_trials(study)
    return [t.number for t in lost_trials(study, storage) if fail_trial(study, storage, t)]


def fail_trial(
    study: optuna.Study, storage: optuna.storages.RDBStorage, trial: FrozenTrial
) -> bool:
    """Sets a lost trial FAIL and runs the storage's stale-trial callback on it.

    False when it was finished meanwhile (by its worker after all, or failed by another
    process, which then ran the callback).
    """
    trial_id = frozen_trial_id(trial, study, storage)
    try:
        if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    callback = storage.get_heartbeat_stale_trial_callback()
    if callback is not None:
        callback(study, copy.deepcopy(storage.get_trial(trial_id)))
    return True


def _fail_stale_trials(study: optuna.Study) -> list[int]:
    """Optuna's public `fail_stale_trials`, and the numbers of the trials it failed."""
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    optuna.storages.fail_stale_trials(study)
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return sorted(t.number for t in failed if t.number in running)


def _finder(engine: sa.Engine) -> LostTrialIds:
    from sweeps._optuna.lost import LostTrialIds

    return LostTrialIds(engine)

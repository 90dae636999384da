"""The fence around Optuna's private names: every one this project uses is here.

Two kinds live in this package. Modules that write or read Optuna's RDB tables directly
(`ask`, `beat`, `intermediate`, `lost`, `read`, `tell`) import `optuna.storages._rdb` and are
imported lazily, through `fenced`, only for an `RDBStorage` whose schema revision their tests
were run against. Private attributes of Optuna's objects (`Study._storage`,
`Trial._trial_id`, ...) are read only through the accessors below and `ask_view`.

Either way the caller falls back to Optuna's public API where the private name is gone (an
`ImportError` or a missing attribute), where the schema is not a tested one, or where
SWEEPS_OPTUNA_PUBLIC=1 forces it. A fallback is announced once, at WARNING level, with its
reason; a forced one is not announced.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import optuna
import sqlalchemy as sa

from tracking.private_names import PrivateNames

FORCE_PUBLIC_ENV = "SWEEPS_OPTUNA_PUBLIC"
# Optuna's RDB schema revisions the modules here were checked against: v3.2.0.a is the
# head of Optuna 3.2 to 5.0. Add one only after their tests pass on it.
TESTED_SCHEMA_REVISIONS = frozenset({"v3.2.0.a"})

OPTUNA = PrivateNames("Optuna", FORCE_PUBLIC_ENV, logging.getLogger("sweeps"))
public_forced = OPTUNA.public_forced
warn_once = OPTUNA.warn_once
_T = TypeVar("_T")


def _private(owner: object, name: str, what: str) -> Any:
    """`owner.name`, or None after a one-time warning where this Optuna has no such name
    (or the public path is forced)."""
    if public_forced():
        return None
    try:
        return getattr(owner, name)
    except AttributeError:
        warn_once(what, f"{type(owner).__name__}.{name} is gone from this Optuna")
        return None


def missing_trial_attributes(names: Iterable[str]) -> list[str]:
    """Those of `names` that `optuna.Trial.__init__` no longer sets on a trial (they are
    instance attributes: the class itself has none of them)."""
    assigned = optuna.Trial.__init__.__code__.co_names
    return [name for name in names if name not in assigned]


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage | None:
    """The storage object `study` reads and writes through (Optuna has no public getter),
    or None where it cannot be had: callers that built the study hold the storage they
    built it with and should pass that instead."""
    storage: optuna.storages.BaseStorage | None = getattr(study, "_storage", None)
    if storage is None:
        warn_once("reaching a study's storage", "Study._storage is gone from this Optuna")
    return storage


def study_id(study: optuna.Study, storage: optuna.storages.BaseStorage) -> int:
    """The study's id in `storage` (the one it was loaded from)."""
    known = _private(study, "_study_id", "reading a study's id")
    if known is not None:
        return int(known)
    return storage.get_study_id_from_name(study.study_name)


def trial_id(trial: optuna.Trial) -> int:
    """The trial's id in its study's storage (Optuna's `Trial` keeps it privately)."""
    return frozen_trial_id(trial, trial.study, trial.storage)


def frozen_trial_id(
    trial: optuna.Trial | optuna.trial.FrozenTrial,
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
) -> int:
    """The id of `study`'s `trial` in `storage` (a Trial and a FrozenTrial keep it
    privately)."""
    known = _private(trial, "_trial_id", "reading a trial's id")
    if known is not None:
        return int(known)
    return storage.get_trial_id_from_study_id_trial_number(study_id(study, storage), trial.number)


def trial_ids(trials: list[optuna.Trial]) -> list[int]:
    """`trial_id` of each trial, in order."""
    return [trial_id(trial) for trial in trials]


def rdb_backend(
    study: optuna.Study, what: str, storage: optuna.storages.BaseStorage | None = None
) -> optuna.storages.RDBStorage | None:
    """The RDBStorage under `study` (`storage`, the one it was built with, where the caller
    holds it) when `what` may use its tables directly, else None (after a one-time warning
    saying why, unless the public path was asked for or there are no tables to use)."""
    if public_forced():
        return None
    if storage is None:
        storage = storage_of(study)
    # A study built on an RDBStorage holds it inside Optuna's _CachedStorage.
    backend = getattr(storage, "_backend", storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        return None  # in-memory or journal storage: nothing to bypass
    revision = backend.get_current_version()
    if revision not in TESTED_SCHEMA_REVISIONS:
        warn_once(what, f"Optuna's schema revision {revision} is not one {what} was tested on")
        return None
    return backend


def fenced(
    study: optuna.Study,
    what: str,
    make: Callable[[sa.Engine], _T],
    storage: optuna.storages.BaseStorage | None = None,
) -> _T | None:
    """`make(engine)` — something built on a module here, imported inside `make` — for
    `study`'s RDB storage, or None for Optuna's public API: not an RDB storage at a tested
    schema revision, or an Optuna without the private names the module imports."""
    backend = rdb_backend(study, what, storage)
    if backend is None:
        return None
    try:
        return make(backend.engine)
    except ImportError as e:  # a private name gone in another Optuna
        warn_once(what, str(e))
        return None


def as_read_back(utc: datetime) -> datetime:
    """A time as Optuna's RDB storage gives it back: it stores naive UTC and reads it as
    naive local time."""
    return utc.replace(tzinfo=UTC).astimezone().replace(tzinfo=None)


@dataclass(frozen=True)
class Told:
    """One trial's end, as `study.tell(trial, value, state)` and its user attributes would
    store it (the input of `sweeps._optuna.tell.BulkTeller`)."""

    trial: optuna.Trial
    state: optuna.trial.TrialState
    value: float | None  # the objective, for a COMPLETE trial
    user_attrs: Mapping[str, Any]


def told_values(t: Told) -> list[float] | None:
    """The values Optuna stores for a told trial: a COMPLETE trial's objective; a PRUNED
    trial's last reported value unless NaN; none for FAIL."""
    if t.state is optuna.trial.TrialState.COMPLETE:
        assert t.value is not None and not math.isnan(t.value)
        return [float(t.value)]
    if t.state is optuna.trial.TrialState.PRUNED:
        frozen = t.trial._cached_frozen_trial
        last = frozen.last_step
        if last is not None and not math.isnan(frozen.intermediate_values[last]):
            return [float(frozen.intermediate_values[last])]
    return None


def preview(t: Told) -> optuna.trial.FrozenTrial:
    """The trial as it will be once told, without telling it: a copy, for a model of
    the study planned while the trial's writes are still under way."""
    frozen = copy.copy(t.trial._cached_frozen_trial)
    frozen.state = t.state
    frozen.values = told_values(t)
    frozen.datetime_complete = datetime.now()  # local time, as Optuna reads it back
    frozen.user_attrs = {**frozen.user_attrs, **t.user_attrs}
    return frozen

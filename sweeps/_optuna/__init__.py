"""The fence around Optuna's private names: code here writes Optuna's RDB tables directly
(and `sweeps.reports`, which predates the fence, decides through `rdb_backend` too).

Each module is imported lazily, only for an `RDBStorage` whose schema revision its tests
were run against, and the caller falls back to Optuna's public API otherwise, or when
SWEEPS_OPTUNA_PUBLIC=1 forces it (a fallback is announced once, at WARNING level).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import optuna
import sqlalchemy as sa

FORCE_PUBLIC_ENV = "SWEEPS_OPTUNA_PUBLIC"
# Optuna's RDB schema revisions the modules here were checked against: v3.2.0.a is the
# head of Optuna 3.2 to 5.0. Add one only after their tests pass on it.
TESTED_SCHEMA_REVISIONS = frozenset({"v3.2.0.a"})

_logger = logging.getLogger("sweeps")
_warned: set[str] = set()


def rdb_backend(study: optuna.Study, what: str) -> optuna.storages.RDBStorage | None:
    """The study's RDBStorage when `what` may write its tables directly, else None (after
    a one-time warning saying why, unless the public path was asked for)."""
    if os.environ.get(FORCE_PUBLIC_ENV) == "1":
        return None
    storage = study._storage  # no public getter
    backend = getattr(storage, "_backend", storage)  # inside Optuna's _CachedStorage
    if not isinstance(backend, optuna.storages.RDBStorage):
        return None  # in-memory or journal storage: nothing to bypass
    revision = backend.get_current_version()
    if revision not in TESTED_SCHEMA_REVISIONS:
        warn_once(what, f"Optuna's schema revision {revision} is not one {what} was tested on")
        return None
    return backend


_T = TypeVar("_T")


def fenced(study: optuna.Study, what: str, make: Callable[[sa.Engine], _T]) -> _T | None:
    """`make(engine)` — something built on a module here, imported inside `make` — for
    `study`'s RDB storage, or None for Optuna's public API: not an RDB storage at a tested
    schema revision, or an Optuna without the private names the module imports."""
    backend = rdb_backend(study, what)
    if backend is None:
        return None
    try:
        return make(backend.engine)
    except ImportError as e:  # a private name gone in another Optuna
        warn_once(what, str(e))
        return None


def warn_once(what: str, reason: str) -> None:
    if what not in _warned:
        _warned.add(what)
        _logger.warning("sweeps: %s uses Optuna's public API (slower): %s", what, reason)


@dataclass(frozen=True)
class Told:
    """One trial's end, as `study.tell(trial, value, state)` and its user attributes would
    store it (the input of `sweeps._optuna.tell.BulkTeller`)."""

    trial: optuna.Trial
    state: optuna.trial.TrialState
    value: float | None  # the objective, for a COMPLETE trial
    user_attrs: Mapping[str, Any]

"""Typed errors of the sweep layer and the one place secrets are masked in messages.

Every error the public API raises is a `SweepsError`. The trainer's and the tracking
layer's own errors (which import nothing of this package) reach a caller of the API as the
subclasses here that share their name, each also an instance of the original class
(`public_error`).
"""

from __future__ import annotations

import sqlite3
import sys

from tracking import errors as tracking_errors
from tracking.secrets import mask_secrets
from trainer import errors as trainer_errors

__all__ = [
    "AllocationError",
    "ConfigError",
    "DataChanged",
    "DeviceError",
    "StorageError",
    "StoreFileError",
    "SweepsError",
    "TaskError",
    "TaskNotImportable",
    "TrackingError",
    "UnknownStudyError",
    "UsageError",
    "mask_secrets",
    "public_error",
]


class SweepsError(Exception):
    """Something the user asked for cannot be done; shown as one line, exit code 2."""


class UsageError(SweepsError, ValueError):
    """Invalid options or configuration."""


class StorageError(SweepsError):
    """A storage or tracking URL is malformed, unreachable or incompatible."""


class UnknownStudyError(UsageError, tracking_errors.UnknownStudyError):
    """No study of that name in the storage."""


class ConfigError(UsageError, trainer_errors.ConfigError):
    """A training option (epochs, lr, λ, seeds, ...) is invalid."""


class TaskError(UsageError, trainer_errors.TaskError):
    """A task's name, options or data is invalid, or its code failed while it was built."""


class TaskNotImportable(TaskError):
    """A task given as a Python object that another process cannot import by its name
    (one defined in `__main__`, a lambda, a closure) where worker processes need it."""


class DeviceError(UsageError, trainer_errors.DeviceError):
    """The requested device does not exist on this machine."""


class AllocationError(SweepsError, trainer_errors.AllocationError):
    """The task's data or model is larger than this machine can hold."""


class TrackingError(StorageError, tracking_errors.TrackingError):
    """A tracking store (MLflow, the results tables) cannot do what was asked."""


class StoreFileError(TrackingError, tracking_errors.StoreFileError):
    """A store's file is damaged, another program's, or not writable."""


class DataChanged(UsageError):
    """A file the study pinned differs from the one here (`sweeps.data_pins`)."""


# Most specific first: the first class the error is an instance of names its public class.
_PUBLIC: tuple[tuple[type[Exception], type[SweepsError]], ...] = (
    (trainer_errors.ConfigError, ConfigError),
    (trainer_errors.TaskError, TaskError),
    (trainer_errors.DeviceError, DeviceError),
    (trainer_errors.AllocationError, AllocationError),
    (trainer_errors.TrainerError, UsageError),
    (tracking_errors.UnknownStudyError, UnknownStudyError),
    (tracking_errors.StoreFileError, StoreFileError),
    (tracking_errors.TrackingError, TrackingError),
)


def public_error(error: BaseException) -> BaseException:
    """`error` as the public API raises it: a SweepsError as it is; the trainer's and the
    tracking layer's errors as the public class of the same name, with their message,
    attributes and traceback; a database that failed beneath a call (a server gone, a
    damaged file) as a StorageError of one line; anything else (a bug) unchanged."""
    if isinstance(error, SweepsError):
        return error
    for original, public in _PUBLIC:
        if isinstance(error, original):
            return _as(public, error, str(error))
    reason = database_failure(error)
    if reason is not None:
        return _as(StorageError, error, f"the database failed: {reason}")
    return error


def _as(cls: type[SweepsError], error: BaseException, message: str) -> SweepsError:
    translated = cls(message)
    translated.__dict__.update(getattr(error, "__dict__", {}))
    return translated.with_traceback(error.__traceback__)


def database_failure(error: BaseException) -> str | None:
    """The first line of why a database failed beneath `error` (SQLAlchemy's DBAPIError
    or sqlite3's, anywhere in its chain: Optuna and MLflow wrap them); None otherwise."""
    sa = sys.modules.get("sqlalchemy")
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if sa is not None and isinstance(cause, sa.exc.DBAPIError):
            return _first_line(cause.orig if cause.orig is not None else cause)
        if isinstance(cause, sqlite3.DatabaseError):
            return _first_line(cause)
        cause = cause.__cause__ or cause.__context__
    return None


def _first_line(error: BaseException) -> str:
    return next(iter(str(error).strip().splitlines()), type(error).__name__)

"""What Optuna and MLflow would print during a call of the public API, kept from the user.

A library call prints nothing and leaves the process as it found it. Optuna warns of the
experimental features a study uses and of heartbeats used outside `Study.optimize`, and
logs each study it creates; MLflow logs its store's creation and draws progress bars while
it downloads artifacts; and, with an MLflow server, ending a run writes the run's URL to
standard output. `quiet_libraries` holds all of that for the duration of one call:

  - the warnings those libraries raise for what this package does on purpose are
    ignored (`warnings.catch_warnings`); any other warning passes as usual;
  - the records of their loggers go, instead of to their own handlers, to the loggers
    `sweeps.optuna`, `sweeps.mlflow`, ... below `sweeps`, which print nothing unless the
    application configures logging (`logging.basicConfig()`, or a handler on `sweeps`);
  - MLflow's two display switches (`MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`,
    `MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT`, which MLflow reads only from the
    environment) are set where the user left them unset.

All of it is restored when the call returns (when the last of several calls running at once
in different threads returns). While a call runs it holds for the whole process: warning
filters, loggers and the environment are process-wide, so another thread of the
application that warns or logs through these libraries at that moment is affected too (as
with `warnings.catch_warnings`, which is not thread-safe).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

# The loggers the libraries print through with handlers of their own (MLflow configures
# `alembic` and `sqlalchemy.engine` as it is imported).
LIBRARY_LOGGERS = ("optuna", "mlflow", "alembic", "sqlalchemy.engine")
# MLflow's switches, read from the environment at each use, and the quiet value of each.
MLFLOW_DISPLAY = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}

_lock = threading.Lock()
_active: list[ExitStack] = []  # the settings of the calls running now, held once
_calls = 0  # calls running now, in any thread: the last to return restores


@contextmanager
def quiet_libraries(*, optuna: bool = True, mlflow: bool = False) -> Iterator[None]:
    """Run the block without Optuna's and MLflow's output (see the module).

    `optuna`, `mlflow`: whether the block may use them; each is imported first then, so
    that the handlers it installs as it is imported are among those set aside.
    """
    global _calls
    if optuna:
        import optuna as _optuna  # noqa: F401
    if mlflow:
        import mlflow as _mlflow  # noqa: F401
    with _lock:
        _calls += 1
        if _calls == 1:
            settings = ExitStack()
            settings.enter_context(_ignored_warnings())
            settings.enter_context(_forwarded_loggers())
            settings.enter_context(_mlflow_display())
            _active.append(settings)
    try:
        yield
    finally:
        with _lock:
            _calls -= 1
            if _calls == 0:
                _active.pop().close()


@contextmanager
def _ignored_warnings() -> Iterator[None]:
    """Optuna's and MLflow's warnings about what this package does on purpose."""
    with warnings.catch_warnings():
        if "optuna" in sys.modules:  # its own warning class
            experimental = sys.modules["optuna"].exceptions.ExperimentalWarning
            warnings.filterwarnings("ignore", category=experimental)
        # Trials run by ask/tell beat for themselves (`sweeps.lifecycle`).
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        for library in ("optuna", "mlflow", "alembic"):
            warnings.filterwarnings("ignore", category=FutureWarning, module=library)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=library)
        yield


class Forward(logging.Handler):
    """Hands a library's records to the logger of the same name below `sweeps`, where the
    application's logging configuration decides what becomes of them."""

    def emit(self, record: logging.LogRecord) -> None:
        target = logging.getLogger(f"sweeps.{record.name.split('.', 1)[0]}")
        if target.isEnabledFor(record.levelno):
            target.handle(record)


@dataclass
class _Saved:
    handlers: list[logging.Handler]
    propagate: bool


@contextmanager
def _forwarded_loggers() -> Iterator[None]:
    forward = Forward()
    saved = {}
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = _Saved(list(logger.handlers), logger.propagate)
        logger.handlers = [forward]
        logger.propagate = False
    try:
        yield
    finally:
        for name, state in saved.items():
            logger = logging.getLogger(name)
            if logger.handlers == [forward]:  # else configured anew meanwhile: kept
                logger.handlers = state.handlers
                logger.propagate = state.propagate


@contextmanager
def _mlflow_display() -> Iterator[None]:
    unset = [key for key in MLFLOW_DISPLAY if key not in os.environ]
    for key in unset:
        os.environ[key] = MLFLOW_DISPLAY[key]
    try:
        yield
    finally:
        for key in unset:
            os.environ.pop(key, None)

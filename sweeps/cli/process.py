"""What the `sweeps` command settles for its whole process, which the library never does:
where log records go, what Optuna and MLflow print, the import path.

The library leaves the process as it found it (`sweeps.quiet`); a command is a process of
its own, so it sets these once at its entry (and the tests, a process too, call the same
functions). Warnings of the study and of the libraries are one line each on stderr,
`sweeps: warning: ...`, passwords masked.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from sweeps.errors import mask_secrets
from sweeps.logs import OneLinePerKind

OWN_PREFIX = "sweeps: "  # what some of the package's messages start with already


class WarningLines(logging.Handler):
    """The `sweeps` logger's records at WARNING and above as one line each on stderr; those
    of another library handed on to it (`sweeps.quiet.Forward`) once per kind."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._libraries = OneLinePerKind()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != "sweeps" and not record.name.startswith("sweeps."):
            self._libraries.handle(record)
            return
        try:
            text = record.getMessage().removeprefix(OWN_PREFIX)
            sys.stderr.write(f"sweeps: warning: {mask_secrets(text)}\n")
        except Exception:
            self.handleError(record)


def log_warnings_to_stderr() -> None:
    """The `sweeps` logger writes through one `WarningLines` (set once per process)."""
    logger = logging.getLogger("sweeps")
    if not any(isinstance(h, WarningLines) for h in logger.handlers):
        logger.addHandler(WarningLines())


def working_directory_importable() -> None:
    """`--task python:MODULE:...` finds MODULE in the working directory, as under
    `python -m`: the console script does not put it on the path."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def quiet_mlflow() -> None:
    """Settles, for the whole process, what MLflow prints; for an entry point (the `sweeps`
    command, a benchmark, the tests) to call before MLflow's first import.

    MLflow decides on telemetry when imported: say no before the first import. This
    network refuses it anyway, and progress bars on artifact uploads are noise. With an
    MLflow server, ending a run writes its URL to stdout, which would corrupt `--json`.
    "Creating initial MLflow database tables..." and friends are not for our users: MLflow
    sets its loggers' level from MLFLOW_LOGGING_LEVEL when imported. Its warnings and
    errors reach stderr as one line per kind (`sweeps.logs`): MLflow logs every failed
    database call with SQLAlchemy's whole traceback, and is told not to install its own
    handlers (MLFLOW_CONFIGURE_LOGGING), which are replaced too for an MLflow imported
    already.
    """
    from sweeps.logs import one_line_per_kind

    for key, value in (
        ("MLFLOW_DISABLE_TELEMETRY", "true"),
        ("DO_NOT_TRACK", "true"),
        ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"),
        ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true"),
        ("MLFLOW_LOGGING_LEVEL", "WARNING"),
        ("MLFLOW_CONFIGURE_LOGGING", "false"),
    ):
        os.environ.setdefault(key, value)
    one_line_per_kind("mlflow", "alembic")


def quiet_optuna() -> None:
    """Settles, for the whole process, what Optuna prints.

    Optuna logs every trial at INFO and failures with a traceback; we print our own."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    # Trials run by ask/tell and beat for themselves (sweeps.lifecycle), which Optuna warns of.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")

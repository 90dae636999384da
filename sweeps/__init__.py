"""sweeps: Optuna studies over regularization strength × penalty type.

The Python API (docs/python-api.md): `run` and `resume` a study, read its `best` trials,
its `trials` and `compare` studies as rows (or pandas DataFrames), `confirm` the winners on
fresh seeds, `train` one configuration, `check` a study's stores. Calls print nothing and
raise `SweepsError`s; the `sweeps` command is a thin layer over them.
"""

import logging

from sweeps.api import (
    Rows,
    RunResult,
    TrainResult,
    best,
    check,
    compare,
    confirm,
    resume,
    run,
    studies,
    train,
    trials,
)
from sweeps.errors import (
    AllocationError,
    ConfigError,
    DataChanged,
    DeviceError,
    StorageError,
    StoreFileError,
    SweepsError,
    TaskError,
    TaskNotImportable,
    TrackingError,
    UnknownStudyError,
    UsageError,
)

__version__ = "0.1.0"

# A library's logger prints nothing until the application configures logging (the
# logging HOWTO's advice): without it, Python's last-resort handler would print warnings.
logging.getLogger("sweeps").addHandler(logging.NullHandler())

__all__ = [
    "AllocationError",
    "ConfigError",
    "DataChanged",
    "DeviceError",
    "Rows",
    "RunResult",
    "StorageError",
    "StoreFileError",
    "SweepsError",
    "TaskError",
    "TaskNotImportable",
    "TrackingError",
    "TrainResult",
    "UnknownStudyError",
    "UsageError",
    "__version__",
    "best",
    "check",
    "compare",
    "confirm",
    "resume",
    "run",
    "studies",
    "train",
    "trials",
]

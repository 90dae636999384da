"""PyTorch training of one regularized configuration. Knows nothing of Optuna or MLflow.

`trainer.config` and `trainer.errors` import no torch, so the CLI can validate input and
answer queries without paying torch's import time; the rest loads on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from trainer.config import Optimizer, Penalty, TrialConfig
from trainer.errors import ConfigError, DeviceError, TaskError, TrainerError

if TYPE_CHECKING:
    from trainer.devices import resolve_device
    from trainer.loop import EpochCallback, check_config, train
    from trainer.metrics import METRICS
    from trainer.result import TrainStatus, TrialResult
    from trainer.tasks import Task, load_task

_LAZY = {
    "resolve_device": "trainer.devices",
    "EpochCallback": "trainer.loop",
    "train": "trainer.loop",
    "check_config": "trainer.loop",
    "METRICS": "trainer.metrics",
    "TrainStatus": "trainer.result",
    "TrialResult": "trainer.result",
    "Task": "trainer.tasks",
    "load_task": "trainer.tasks",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")


__all__ = [
    "METRICS",
    "ConfigError",
    "DeviceError",
    "EpochCallback",
    "Optimizer",
    "Penalty",
    "Task",
    "TaskError",
    "TrainStatus",
    "TrainerError",
    "TrialConfig",
    "TrialResult",
    "check_config",
    "load_task",
    "resolve_device",
    "train",
]

"""Task registry: `--task NAME` → a function building the Task from options and a data seed.

Built in: `d2l-synthetic`, `diabetes`, `digits`, `csv`; and `python:MODULE:FUNCTION` for a
user's own task (trainer.tasks.python_task has the contract).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from trainer.config import OptionSpec, TaskOption, TrialConfig
from trainer.errors import TaskError
from trainer.tasks import bundled, csv_task, d2l, python_task
from trainer.tasks.base import (
    PerSampleLoss,
    Split,
    Task,
    cross_entropy_loss,
    squared_loss,
)

TaskBuilder = Callable[[Mapping[str, TaskOption], int], Task]

TASKS: dict[str, TaskBuilder] = {
    d2l.NAME: d2l.build,
    bundled.DIABETES: bundled.build_diabetes,
    bundled.DIGITS: bundled.build_digits,
    csv_task.NAME: csv_task.build,
}


def check_task(name: str) -> None:
    if name.startswith(python_task.PREFIX):
        python_task.parse_spec(name)
        return
    if name not in TASKS:
        choices = ", ".join([*sorted(TASKS), "python:MODULE:FUNCTION"])
        raise TaskError(f"unknown task {name!r}; choose one of: {choices}")


def load_task(cfg: TrialConfig) -> Task:
    check_task(cfg.task)
    if cfg.task.startswith(python_task.PREFIX):
        return python_task.build(cfg.task, cfg.options, cfg.effective_data_seed)
    return TASKS[cfg.task](cfg.options, cfg.effective_data_seed)


__all__ = [
    "TASKS",
    "OptionSpec",
    "PerSampleLoss",
    "Split",
    "Task",
    "check_task",
    "cross_entropy_loss",
    "load_task",
    "squared_loss",
]

"""Task registry: `--task NAME` → a function building the Task from options and a data seed."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from trainer.config import TaskOption, TrialConfig
from trainer.errors import TaskError
from trainer.tasks import d2l
from trainer.tasks.base import OptionSpec, PerSampleLoss, Split, Task, squared_loss

TaskBuilder = Callable[[Mapping[str, TaskOption], int], Task]

TASKS: dict[str, TaskBuilder] = {d2l.NAME: d2l.build}
TASK_OPTIONS: dict[str, dict[str, OptionSpec]] = {d2l.NAME: d2l.OPTIONS}


def check_task(name: str) -> None:
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; choose one of: {', '.join(sorted(TASKS))}")


def load_task(cfg: TrialConfig) -> Task:
    check_task(cfg.task)
    return TASKS[cfg.task](cfg.options, cfg.effective_data_seed)


__all__ = [
    "TASKS",
    "TASK_OPTIONS",
    "OptionSpec",
    "PerSampleLoss",
    "Split",
    "Task",
    "check_task",
    "load_task",
    "squared_loss",
]

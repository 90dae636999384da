"""Task registry: `--task NAME` → a function building the Task from options and a data seed.

Built in: `d2l-synthetic`, `diabetes`, `digits`, `csv`; and `python:MODULE:FUNCTION` for a
user's own task (trainer.tasks.python_task has the contract).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from trainer import task_options
from trainer.config import OptionSpec, TaskOption, TrialConfig
from trainer.errors import TaskError
from trainer.tasks import bundled, csv_task, d2l, python_task
from trainer.tasks.base import (
    DatasetSplit,
    PerSampleLoss,
    Split,
    Task,
    cross_entropy_loss,
    squared_loss,
)

# (options, data seed, split seed: None for the task's fixed split) → Task
TaskBuilder = Callable[[Mapping[str, TaskOption], int, int | None], Task]

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


def data_files(cfg: TrialConfig) -> dict[str, str]:
    """The files `load_task(cfg)` reads, by what each is to the task: a built-in task's
    path options as given (`train_csv`, `test_csv`), a `python:` task's module file
    (`module`; importing it, as `load_task` does)."""
    check_task(cfg.task)
    if cfg.task.startswith(python_task.PREFIX):
        path = python_task.module_file(cfg.task)
        return {} if path is None else {"module": path}
    specs = task_options.TASK_OPTIONS.get(cfg.task, {})
    given = cfg.options
    files = {
        name: str(given[name]) for name, spec in specs.items() if spec.path and given.get(name)
    }
    for name, path in files.items():  # checked before anything opens them
        csv_task.check_regular_file(path, "--" + name.replace("_", "-"))
    return files


def load_task(cfg: TrialConfig) -> Task:
    check_task(cfg.task)
    if cfg.task.startswith(python_task.PREFIX):
        return python_task.build(cfg.task, cfg.options, cfg.effective_data_seed)
    return TASKS[cfg.task](cfg.options, cfg.effective_data_seed, cfg.split_seed)


__all__ = [
    "TASKS",
    "DatasetSplit",
    "OptionSpec",
    "PerSampleLoss",
    "Split",
    "Task",
    "check_task",
    "cross_entropy_loss",
    "data_files",
    "load_task",
    "squared_loss",
]

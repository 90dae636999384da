"""Typed errors of the trainer; the CLI turns each into one line on stderr and exit code 2."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class TrainerError(Exception):
    """Base class: something the user asked for cannot be done."""


class ConfigError(TrainerError, ValueError):
    """A configuration value is invalid."""


class DeviceError(TrainerError):
    """The requested device does not exist on this machine."""


class AllocationError(TrainerError):
    """The task's data or model is larger than this machine can hold."""


class TaskError(TrainerError):
    """A task name, task option or task data is invalid."""


@contextmanager
def task_exit_is_task_error(task: str) -> Iterator[None]:
    """A task's own code that raises SystemExit (a `sys.exit()` in a loss) or any other
    BaseException but Ctrl-C is a failure of the task (TaskError, then a failed trial or
    one line), as its exceptions are: it must not end the process that trains it."""
    try:
        yield
    except (Exception, KeyboardInterrupt):
        raise
    except BaseException as e:
        raise TaskError(f"{task} raised {type(e).__name__}: {e}") from None

"""A task given to the Python API as an object: the name a study keeps for it, and whether
another process can import it by that name.

A study stores its task as text (`TrialConfig.task`): a built-in task's name, or
`python:MODULE:NAME`. A callable given instead (`build(data_seed) -> Task`, a function or
any callable object) is named after the module it was defined in and its name there, and
this process builds it by calling the object itself (`trainer.tasks.python_task.in_process`).
Worker processes (`workers > 1`, `sweeps worker`) rebuild the task from that name, so there
it must be importable: defined at the top level of a module with a file, under the name it
was defined with; not in `__main__` (a notebook, the script being run), not a lambda, not a
closure. `require_importable` refuses the others before anything is created.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeps.errors import TaskError, TaskNotImportable

if TYPE_CHECKING:
    from trainer.tasks import Task

TaskFunction = Callable[[int], "Task"]
TaskLike = str | Callable[[int], Any]

PREFIX = "python:"  # trainer.tasks.python_task.PREFIX (not imported: it loads torch)


@dataclass(frozen=True)
class TaskRef:
    """A task as a study keeps it (`name`), with the object it was given as, if any."""

    name: str
    function: TaskFunction | None = None
    problem: str | None = None  # why another process cannot import `name`; None if it can

    @property
    def module(self) -> str | None:
        """The module a `python:` task is imported from."""
        return self.name[len(PREFIX) :].split(":")[0] if self.name.startswith(PREFIX) else None


def task_ref(task: TaskLike) -> TaskRef:
    """The reference of a task given by name or as a callable `data_seed -> Task`.

    Raises:
        TaskError: `task` is neither text nor callable.
    """
    if isinstance(task, str):
        return TaskRef(task)
    if not callable(task):
        raise TaskError(
            "task must be a task name, 'python:MODULE:FUNCTION', or a callable"
            f" data_seed -> Task; got {type(task).__name__}"
        )
    module = getattr(task, "__module__", None) or type(task).__module__
    name = getattr(task, "__qualname__", None) or _bound_name(task, module)
    return TaskRef(f"{PREFIX}{module}:{name}", task, _problem(task, module, name))


def _bound_name(task: object, module: str) -> str:
    """The module-level name a callable object is bound to, else a placeholder."""
    found = sys.modules.get(module)
    for key, value in (vars(found) if found is not None else {}).items():
        if value is task and not key.startswith("_"):
            return key
    return f"<{type(task).__qualname__} object>"


def _problem(task: object, module: str, name: str) -> str | None:
    shown = f"{module}:{name}"
    if module == "__main__":
        return (
            f"task {shown} is defined in __main__ (a notebook or the script being run),"
            " which a worker process cannot import"
        )
    if "<lambda>" in name:
        return f"task {shown} is a lambda, which has no name a worker process could import"
    if "<locals>" in name:
        return f"task {shown} is defined inside a function, which a worker cannot import"
    if not name.isidentifier():
        return f"task {shown} is not bound to a name at the top level of its module"
    found = sys.modules.get(module)
    if getattr(found, name, None) is not task:
        return f"task {shown} is not what {module}.{name} names now (redefined since?)"
    if not isinstance(getattr(found, "__file__", None), str):
        return f"task {shown} comes from module {module!r}, which has no file to import"
    return None


def require_importable(ref: TaskRef, why: str) -> None:
    """Refuse (TaskNotImportable) a task that worker processes could not import.

    Raises:
        TaskNotImportable: With what is wrong and how to fix it.
    """
    if ref.problem is not None:
        raise TaskNotImportable(
            f"{ref.problem}; {why}, worker processes import the task by name: define it at"
            " the top level of a module (a .py file next to the notebook, or installed) and"
            " pass it imported from there"
        )


def serving(ref: TaskRef | None) -> AbstractContextManager[None]:
    """A block in which this process builds the task from the object it was given as."""
    if ref is None or ref.function is None:
        return nullcontext()
    from trainer.tasks.python_task import in_process

    return in_process(ref.name, ref.function)


def import_root(ref: TaskRef) -> str | None:
    """The directory a worker process imports the task's module from: the folder that
    holds its top-level package (None for a task not given as an importable object)."""
    if ref.function is None or ref.problem is not None or ref.module is None:
        return None
    found = sys.modules.get(ref.module)
    path = getattr(found, "__file__", None)
    if not isinstance(path, str):
        return None
    depth = ref.module.count(".") + (1 if Path(path).stem == "__init__" else 0)
    return str(Path(path).absolute().parents[depth])

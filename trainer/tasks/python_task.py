"""`--task python:MODULE:FUNCTION`: a task written by the user, as trusted code.

Contract: `MODULE` is a dotted module name, imported from the current directory or the
environment; `FUNCTION(data_seed: int)` returns a `trainer.tasks.Task` (train/val/test
`Split`s, `make_model(generator)`, a per-sample `loss`; `classification=True` for class
indices and accuracy). The function must be deterministic given `data_seed`: every worker
calls it to rebuild the same data. The module is imported and run with the sweep's own
permissions — exactly like `python -c "import MODULE"` — so only name modules you trust.

A task given to the Python API as an object (`sweeps.run(task=build)`) keeps such a name
(`sweeps.task_refs`), and this process builds it by calling the object itself while the
API call runs (`in_process`), whether or not the name could be imported.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from trainer.config import TaskOption
from trainer.errors import TaskError
from trainer.tasks.base import DatasetSplit, Split, Task

PREFIX = "python:"
TaskFunction = Callable[[int], Task]

# The tasks given as objects to the API calls running now, by name (`in_process`).
_in_process: dict[str, list[TaskFunction]] = {}
_in_process_lock = threading.Lock()


@contextmanager
def in_process(name: str, function: TaskFunction) -> Iterator[None]:
    """While the block runs, task `name` is built here by calling `function` (not by
    importing its module). Blocks nest; the innermost object wins."""
    parse_spec(name)
    with _in_process_lock:
        _in_process.setdefault(name, []).append(function)
    try:
        yield
    finally:
        with _in_process_lock:
            stack = _in_process[name]
            stack.remove(function)
            if not stack:
                del _in_process[name]


def _given(name: str) -> TaskFunction | None:
    with _in_process_lock:
        stack = _in_process.get(name)
        return stack[-1] if stack else None


def parse_spec(name: str) -> tuple[str, str]:
    """`python:pkg.mod:func` → ("pkg.mod", "func"), or a TaskError saying what is wrong."""
    parts = name[len(PREFIX) :].split(":")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise TaskError(f"task {name!r} must be python:MODULE:FUNCTION, e.g. python:mytask:build")
    return parts[0].strip(), parts[1].strip()


def _import(module: str) -> object:
    """Import `module` from `sys.path` as it is (the `sweeps` command puts the working
    directory on it, as `python -m` does)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and (module == e.name or module.startswith(e.name + ".")):
            raise TaskError(f"no module named {module!r} (task python:{module}:...)") from None
        raise TaskError(f"module {module!r} failed to import: {e}") from None
    except (Exception, SystemExit) as e:  # raised while importing: one line, no traceback
        raise TaskError(f"module {module!r} failed to import: {type(e).__name__}: {e}") from None


def module_file(name: str) -> str | None:
    """The file the task's module was imported from (None for one without a file, and
    for a task given as an object from `__main__`: a notebook has no file)."""
    given = _given(name)
    if given is not None:
        module_name = getattr(given, "__module__", None) or type(given).__module__
        found = None if module_name == "__main__" else sys.modules.get(module_name)
        path = getattr(found, "__file__", None)
        return path if isinstance(path, str) else None
    module = _import(parse_spec(name)[0])
    path = getattr(module, "__file__", None)
    return path if isinstance(path, str) else None


def build(name: str, options: Mapping[str, TaskOption], data_seed: int) -> Task:
    module_name, function_name = parse_spec(name)
    if options:
        raise TaskError(
            f"task {name!r} takes no task options (got {sorted(options)[0]!r}); "
            "build the data and model in the function"
        )
    function = _given(name) or getattr(_import(module_name), function_name, None)
    if not callable(function):
        raise TaskError(f"module {module_name!r} has no function {function_name!r}")
    try:
        task = function(data_seed)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # a task's sys.exit() must not end sweeps
        raise TaskError(f"{name} raised {type(e).__name__}: {e}") from None
    if not isinstance(task, Task):
        raise TaskError(f"{name} returned {type(task).__name__}, not a trainer.tasks.Task")
    check_task(task, name)
    return task


# The generator seed of the contract check's model build: a task can tell it from a
# trial's build (tests/gate.py lets it through without counting it).
CHECK_SEED = 0x5EEDC4EC


def check_task(task: Task, name: str) -> None:
    """The Task contract, checked once on two training rows before any trial: splits of
    tensors (or Datasets of rows of tensors) with as many targets as rows, a model that is
    an nn.Module, and a loss that gives one value per sample. A user's task that breaks it
    is one line (TaskError) instead of a traceback from inside training."""
    for split_name in ("train", "val", "test"):
        _check_split(task, split_name, name)
    try:
        model = task.make_model(torch.Generator().manual_seed(CHECK_SEED))
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # sys.exit() included: a failure of the task
        raise TaskError(f"{name}: make_model raised {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise TaskError(f"{name}: make_model returned {type(model).__name__}, not an nn.Module")
    X, y = _rows(task.train, name, "train")
    X, y = X[:2], y[:2]
    try:
        with torch.no_grad():
            out = model.eval()(X)  # eval: a dropout draws nothing from torch's generator
            loss = task.loss(out, y)
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        raise TaskError(f"{name}: the model or loss raised {type(e).__name__}: {e}") from None
    if not isinstance(loss, torch.Tensor) or loss.shape[:1] != (len(X),):
        shown = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise TaskError(
            f"{name}: loss must return one value per sample (a tensor of shape ({len(X)},)),"
            f" got {shown}"
        )


def _check_split(task: Task, split_name: str, name: str) -> None:
    split = getattr(task, split_name)
    if not isinstance(split, Split | DatasetSplit):
        raise TaskError(
            f"{name}: {split_name} is {type(split).__name__}, not a Split, DatasetSplit or Dataset"
        )
    if isinstance(split, DatasetSplit) and len(split) == 0:
        raise TaskError(f"{name}: {split_name} has no rows")
    X, y = _rows(split, name, split_name)
    if not isinstance(X, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TaskError(f"{name}: {split_name}.X and .y must be torch tensors")
    if X.dim() == 0 or y.dim() == 0 or X.shape[0] != y.shape[0]:
        raise TaskError(
            f"{name}: {split_name} has {tuple(X.shape)} inputs for {tuple(y.shape)} targets;"
            " X and y need one row per example"
        )
    if X.shape[0] == 0:
        raise TaskError(f"{name}: {split_name} has no rows")
    if task.classification and y.is_floating_point():
        raise TaskError(f"{name}: a classification task's {split_name}.y must hold class indices")


def _rows(split: Split | DatasetSplit, name: str, split_name: str) -> tuple[Any, Any]:
    """A Split's X and y (checked by the caller), or a Dataset's first two rows as its
    loader gives them."""
    if isinstance(split, Split):
        return split.X, split.y
    from trainer.data import head  # trainer.data imports this package

    try:
        return head(split)
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        raise TaskError(
            f"{name}: reading {split_name}'s first rows raised {type(e).__name__}: {e}"
        ) from None

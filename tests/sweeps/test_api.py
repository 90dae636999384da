"""The public Python API (`import sweeps`): tasks given as Python objects, errors raised as
`SweepsError`s (never SystemExit), the names it exports."""

from __future__ import annotations

import importlib
import pkgutil
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sweeps

# A task as a notebook defines it: in `__main__`.
NOTEBOOK_TASK = """
import torch
from trainer.models import ModelSpec, make_model_factory
from trainer.tasks import Split, Task, squared_loss

def build(data_seed):
    gen = torch.Generator().manual_seed(data_seed)
    X = torch.randn(30, 2, generator=gen)
    y = X @ torch.tensor([[1.0], [-1.0]])
    train, val, test = (Split(X[i : i + 10], y[i : i + 10]) for i in (0, 10, 20))
    return Task("nb", train, val, test, make_model_factory(ModelSpec(), 2, 1), squared_loss)

def make_closure():
    def inner(data_seed):
        return build(data_seed)
    return inner
"""


def notebook() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(NOTEBOOK_TASK, "<notebook>", "exec"), namespace)
    return namespace


def test_a_notebook_function_is_a_task_in_this_process(tmp_path: Path) -> None:
    build = notebook()["build"]
    home = tmp_path / "home"
    quick = {"epochs": 3, "track": False, "home": home}
    result = sweeps.run("nb", task=build, penalties="l2", trials=2, **quick)
    assert result.states == {"COMPLETE": 2}
    assert [row["number"] for row in sweeps.trials("nb", home=home)] == [0, 1]
    trained = sweeps.train(build, penalty="l2", lambda_=0.1, **quick)
    assert trained.summary["task"] == "python:__main__:build"
    assert len(trained.history["val_loss"]) == 3
    resumed = sweeps.resume("nb", trials=1, task=build, track=False, home=home)
    assert sum(resumed.states.values()) >= 3


@pytest.mark.parametrize("kind", ["__main__ function", "lambda", "closure"])
def test_a_task_workers_cannot_import_is_refused_before_anything_is_made(
    tmp_path: Path, kind: str
) -> None:
    namespace = notebook()
    build = namespace["build"]
    tasks: dict[str, Callable[[int], Any]] = {
        "__main__ function": build,
        "lambda": lambda seed: build(seed),
        "closure": namespace["make_closure"](),
    }
    home = tmp_path / "home"
    for options in ({"workers": 2}, {"create_only": True}):
        with pytest.raises(sweeps.TaskNotImportable) as refused:
            sweeps.run("p", task=tasks[kind], trials=2, epochs=2, home=home, **options)
        message = str(refused.value)
        assert "import" in message and "top level of a module" in message, message
        assert isinstance(refused.value, sweeps.SweepsError)
    assert not home.exists()


def test_an_importable_callable_is_named_by_its_module(tmp_path: Path) -> None:
    from sweeps.task_refs import import_root, task_ref
    from tests import gate

    ref = task_ref(gate.build)
    assert ref.name == gate.SPEC and ref.problem is None
    assert import_root(ref) == str(Path(gate.__file__).parents[1])


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda home: sweeps.run("s", lambda_min=10, lambda_max=1, home=home), sweeps.UsageError),
        (lambda home: sweeps.run("s", sampler="nope", home=home), sweeps.UsageError),
        (lambda home: sweeps.run("s", epochs=0, home=home), sweeps.UsageError),
        (lambda home: sweeps.run("s", task="nope", home=home), sweeps.TaskError),
        (lambda home: sweeps.run("s", device="cuda:99", home=home), sweeps.DeviceError),
        (lambda home: sweeps.run("s", storage="mysql://x/y", home=home), sweeps.StorageError),
        (lambda home: sweeps.train(lr=-1.0, home=home), sweeps.ConfigError),
        (lambda home: sweeps.train(penalty="l3", home=home), sweeps.ConfigError),
        (lambda home: sweeps.resume("nobody", home=home), sweeps.UnknownStudyError),
        (lambda home: sweeps.confirm("nobody", home=home), sweeps.UnknownStudyError),
        (lambda home: sweeps.confirm("nobody", seeds=0, home=home), sweeps.UsageError),
    ],
)
def test_refusals_are_sweeps_errors_and_write_nothing(
    tmp_path: Path, call: Callable[[Path], object], error: type[Exception]
) -> None:
    home = tmp_path / "home"
    with pytest.raises(error) as raised:
        call(home)
    assert isinstance(raised.value, sweeps.SweepsError)
    assert "\n" not in str(raised.value)
    assert not home.exists()


def test_a_study_not_in_an_existing_storage_is_an_unknown_study(tmp_path: Path) -> None:
    home = tmp_path / "home"
    sweeps.run("s", trials=1, epochs=2, track=False, home=home)
    for lookup in (sweeps.best, sweeps.trials):
        with pytest.raises(sweeps.UnknownStudyError, match="no study named 'other'"):
            lookup("other", home=home)
    with pytest.raises(sweeps.UnknownStudyError):
        sweeps.compare("s", "other", home=home)
    assert [row["study"] for row in sweeps.studies(home=home)] == ["s"]
    with pytest.raises(sweeps.UsageError, match="not the study's task"):
        sweeps.resume("s", task=notebook()["build"], home=home, track=False)


def test_every_public_name_is_what_it_says_after_every_module_is_imported() -> None:
    """A submodule named like a call (`sweeps/confirm.py`) would replace the call with
    itself on the package once imported."""
    for info in pkgutil.walk_packages(sweeps.__path__, "sweeps."):
        if not info.name.startswith(("sweeps.cli", "sweeps.__main__")):
            importlib.import_module(info.name)
    for name in sweeps.__all__:
        assert not isinstance(getattr(sweeps, name), types.ModuleType), name
    assert callable(sweeps.confirm) and callable(sweeps.check)


def test_rows_become_data_frames_with_the_usual_columns_first(tmp_path: Path) -> None:
    home = tmp_path / "home"
    sweeps.run("s", penalties="l1,l2", trials=2, epochs=2, track=False, home=home)
    best = sweeps.best("s", home=home)
    frame = best.as_frame()
    assert list(frame.columns[:4]) == ["study", "penalty", "lambda", "l1_ratio"]
    assert frame["penalty"].tolist() == [row["penalty"] for row in best]
    assert frame["value"].tolist() == [row["value"] for row in best]
    assert list(sweeps.trials("s", home=home).as_frame()["number"]) == [0, 1]

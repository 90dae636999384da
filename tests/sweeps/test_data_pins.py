"""A study pins the files its task reads: a resume or a worker on changed files is refused
naming the file, unless told to go on, and then no result of the old data is reused."""

from __future__ import annotations

import csv
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest

from tests.sweeps.cli_helpers import assert_usage_error, invoke, invoke_json
from tests.trainer.test_tasks_data import regression_csv

# The user attributes a study and its trials keep their data versions in (stored names).
STUDY_ATTR = "sweeps.data"
TRIAL_ATTR = "sweeps.data_version"
# `none` has no searched parameter: every trial repeats the first configuration.
COMMON = ["--penalties", "none", "--epochs", "5", "--batch-size", "0", "--no-track"]


def _csv_study(table: str) -> list[str]:
    return ["--study", "s", "--task", "csv", "--train-csv", table, "--target", "y", *COMMON]


def _scale_target(table: str, factor: float) -> None:
    """Edit the file's target column in place (same name, same rows)."""
    with open(table, newline="") as f:
        header, *rows = list(csv.reader(f))
    column = header.index("y")
    for row in rows:
        row[column] = repr(float(row[column]) * factor)
    with open(table, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def _study(home: Path) -> optuna.Study:
    return optuna.load_study(study_name="s", storage=f"sqlite:///{home / 'sweeps.db'}")


def _state(home: Path) -> tuple[Any, ...]:
    """What a refused command must leave as it was."""
    study = _study(home)
    return (study.user_attrs, [(t.number, t.state, t.user_attrs) for t in study.trials])


def _run(home: Path, table: str, *extra: str) -> dict[str, Any]:
    doc: dict[str, Any] = invoke_json("run", *_csv_study(table), "--home", str(home), *extra)
    return doc


@pytest.fixture
def table(tmp_path: Path) -> str:
    return regression_csv(tmp_path / "table.csv", n=40)


def test_a_resume_on_an_edited_csv_is_refused_naming_the_file(tmp_path: Path, table: str) -> None:
    home = tmp_path / "home"
    _run(home, table, "--trials", "1")
    before = _state(home)
    _scale_target(table, 100.0)
    refused = invoke("run", *_csv_study(table), "--trials", "1", "--home", str(home))
    assert_usage_error(refused, table, "changed", "--accept-data-change")
    assert _state(home) == before  # nothing written


def test_accepting_a_data_change_retrains_the_repeated_configuration(
    tmp_path: Path, table: str
) -> None:
    """The second run repeats the first trial's configuration on the edited file: trained
    again (the value of the new file), then reused by a third run on that file."""
    home = tmp_path / "home"
    old = _run(home, table, "--trials", "1")["best"][0]["value"]
    _scale_target(table, 100.0)
    accepted = _run(home, table, "--trials", "1", "--accept-data-change")
    assert accepted["reused"] == 0
    single = invoke_json(
        "train", "--task", "csv", "--train-csv", table, "--target", "y", *COMMON[2:]
    )
    trials = invoke_json("trials", "--study", "s", "--home", str(home))
    assert [t["value"] for t in trials] == [old, single["val_loss"]]
    assert single["val_loss"] != old
    again = _run(home, table, "--trials", "1")
    trials = invoke_json("trials", "--study", "s", "--home", str(home))
    # Every later trial repeats trial 1 (the study's one configuration, same sampler seed):
    # each takes its result, none the old data's trial 0.
    assert again["reused"] >= 1
    assert [t["reused_from"] for t in trials[2:]] == [1] * again["reused"]
    study = _study(home)
    assert [v["version"] for v in study.user_attrs[STUDY_ATTR]] == [1, 2]
    first, second = (v["digest"] for v in study.user_attrs[STUDY_ATTR])
    later = [second] * again["reused"]
    assert [t.user_attrs[TRIAL_ATTR] for t in study.trials] == [first, second, *later]


def test_a_worker_on_a_different_file_is_refused(tmp_path: Path, table: str) -> None:
    home = tmp_path / "home"
    _run(home, table, "--create-only")
    before = _state(home)
    _scale_target(table, 2.0)
    worker = ["worker", "--study", "s", "--trials", "1", "--no-track", "--home", str(home)]
    assert_usage_error(invoke(*worker), table, "changed")
    assert _state(home) == before
    result = invoke(*worker, "--accept-data-change", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert [t.state.name for t in _study(home).trials] == ["COMPLETE"]


TASK_MODULE = """
import torch
from torch import nn
from trainer.tasks import Split, Task
from trainer.tasks.base import squared_loss

SCALE = {scale}

def build(seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(20, 3, generator=g)
    split = Split(X, SCALE * X.sum(dim=1, keepdim=True))
    return Task("mine", split, split, split, lambda gen: nn.Linear(3, 1), squared_loss)
"""


def test_a_resume_with_a_changed_python_task_module_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"pinned_{uuid.uuid4().hex[:8]}"
    source = tmp_path / f"{module}.py"
    source.write_text(TASK_MODULE.format(scale=1.0))
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    args = ["run", "--study", "s", "--task", f"python:{module}:build", *COMMON]
    args += ["--trials", "1", "--home", str(home)]
    assert invoke(*args).exit_code == 0
    before = _state(home)
    source.write_text(TASK_MODULE.format(scale=2.0))
    assert_usage_error(invoke(*args), str(source), "changed")
    assert _state(home) == before

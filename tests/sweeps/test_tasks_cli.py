"""The tasks through the real CLI: bad input, sweeps on diabetes and digits, csv workers."""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.sweeps.cli_helpers import assert_usage_error, invoke, invoke_json
from tests.sweeps.study_helpers import cli_env, run_cli
from tests.trainer.test_tasks_data import regression_csv, write_csv
from trainer import TrialConfig
from trainer.tasks import load_task


@pytest.fixture
def table(tmp_path: Path) -> str:
    return regression_csv(tmp_path / "table.csv", n=60)


def _bad_csv(tmp_path: Path, kind: str) -> list[str]:
    """Arguments for `sweeps train` that name one broken input."""
    path = tmp_path / f"{kind}.csv"
    rows = [[i, i % 3, 2.0 * i] for i in range(20)]
    if kind == "missing":
        return ["--train-csv", str(path), "--target", "y"]
    if kind == "no_target":
        return ["--train-csv", write_csv(path, ["a", "b", "y"], rows), "--target", "price"]
    if kind == "text":
        rows[4][1] = "red"
    if kind == "nan":
        rows[7][0] = "NaN"  # type: ignore[call-overload]
    if kind == "overflow":
        rows[3][1] = 5e300
    if kind == "empty":
        path.write_text("")
        return ["--train-csv", str(path), "--target", "y"]
    header = ["a", "", "y"] if kind == "unnamed" else ["a", "b", "y"]
    return ["--train-csv", write_csv(path, header, rows), "--target", "y"]


@pytest.mark.parametrize(
    ("kind", "extra", "fragment"),
    [
        ("missing", [], "no such file"),
        ("no_target", [], "no column 'price' (columns: a, b, y)"),
        ("text", [], "column 'b' is not numeric (line 6: 'red')"),
        ("nan", [], "column 'a' has a NaN or infinite cell (line 9)"),
        ("empty", [], "is empty"),
        ("unnamed", [], "column 2 of the header has no name"),
        ("overflow", [], "column 'b' holds 5e+300 (line 5), beyond float32's range"),
        ("ok", ["--val-fraction", "nan"], "val_fraction must be a finite number"),
        ("ok", ["--batch-size", "50"], "batch size 50 is larger than the 12 training rows"),
        ("ok", ["--val-fraction", "1.5"], "val_fraction must be < 1"),
        ("ok", ["--n-train", "5"], "task 'csv' has no option 'n_train'"),
    ],
)
def test_bad_csv_input_is_one_line_exit_2(
    tmp_path: Path, kind: str, extra: list[str], fragment: str
) -> None:
    home = tmp_path / "home"
    args = ["--task", "csv", *_bad_csv(tmp_path, kind), *extra, "--home", str(home)]
    assert_usage_error(invoke("train", *args), fragment)
    assert not home.exists()


@pytest.mark.parametrize(
    ("task", "fragment"),
    [
        ("python:no_such_module_abc:build", "no module named 'no_such_module_abc'"),
        ("python:json:no_such_function", "module 'json' has no function 'no_such_function'"),
        ("python:json", "must be python:MODULE:FUNCTION"),
        ("csv", "task csv needs --train-csv FILE"),
    ],
)
def test_bad_task_is_one_line_exit_2(tmp_path: Path, task: str, fragment: str) -> None:
    home = tmp_path / "home"
    assert_usage_error(invoke("train", "--task", task, "--home", str(home)), fragment)
    args = ["--study", "s", "--task", task, "--trials", "1", "--home", str(home)]
    assert_usage_error(invoke("run", *args), fragment)
    assert not home.exists()  # refused before any study or store exists


@pytest.mark.timeout(120)  # a device that never ends or a pipe without a writer would hang
@pytest.mark.parametrize("kind", ["device", "fifo"])
@pytest.mark.parametrize("option", ["--train-csv", "--test-csv"])
def test_a_csv_input_that_is_not_a_regular_file_is_one_line_exit_2(
    tmp_path: Path, table: str, kind: str, option: str
) -> None:
    path = "/dev/zero" if kind == "device" else str(tmp_path / "fifo")
    if kind == "fifo":
        os.mkfifo(path)
    files = {"--train-csv": table, "--test-csv": table, option: path}
    task = ["--task", "csv", *[a for o, p in files.items() for a in (o, p)], "--target", "y"]
    home = tmp_path / "home"
    fragment = f"{option} {path!r} is not a regular file"
    assert_usage_error(invoke("train", *task, "--epochs", "2", "--home", str(home)), fragment)
    args = ["--study", "s", *task, "--trials", "1", "--epochs", "2", "--home", str(home)]
    assert_usage_error(invoke("run", *args), fragment)
    assert not home.exists()  # refused before any study or store exists


JUNK_TASKS = """
import torch
from torch import nn
from trainer.tasks import Split, Task
from trainer.tasks.base import squared_loss

def _task(n_y=10, model=None, loss=squared_loss):
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(10, 3, generator=g), torch.randn(n_y, 1, generator=g))
    make = model or (lambda gen: nn.Linear(3, 1))
    return Task("junk", split, split, split, make, loss)

def bad_model(seed):
    return _task(model=lambda gen: "not a model")

def scalar_loss(seed):
    return _task(loss=lambda out, y: float(((out - y) ** 2).mean()))

def raising_loss(seed):
    def loss(out, y):
        raise RuntimeError("boom")
    return _task(loss=loss)

def ragged(seed):
    return _task(n_y=9)
"""


@pytest.mark.parametrize(
    ("function", "fragment"),
    [
        ("bad_model", "make_model returned str, not an nn.Module"),
        ("scalar_loss", "loss must return one value per sample"),
        ("raising_loss", "the model or loss raised RuntimeError: boom"),
        ("ragged", "train has (10, 3) inputs for (9, 1) targets"),
    ],
)
def test_a_python_task_breaking_the_contract_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, function: str, fragment: str
) -> None:
    module = f"junk_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(JUNK_TASKS)
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    task = f"python:{module}:{function}"
    assert_usage_error(invoke("train", "--task", task, "--home", str(home)), fragment)
    args = ["--study", "s", "--task", task, "--trials", "1", "--home", str(home)]
    assert_usage_error(invoke("run", *args), fragment)
    assert not home.exists()


CHATTY_TASKS = """
import torch
from torch import nn
from trainer.tasks import Split, Task
from trainer.tasks.base import squared_loss

def _task(loss):
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(10, 3, generator=g), torch.randn(10, 1, generator=g))
    return Task("chatty", split, split, split, lambda gen: nn.Linear(3, 1), loss)

def talks(seed):
    print("building the data")
    def loss(out, y):
        print("a loss printed")
        return squared_loss(out, y)
    return _task(loss)

def exits_at_once(seed):
    def loss(out, y):
        raise SystemExit(0)
    return _task(loss)

def exits_in_training(seed):
    def loss(out, y):
        if torch.is_grad_enabled():  # the Task contract check runs the loss without grad
            raise SystemExit(0)
        return squared_loss(out, y)
    return _task(loss)
"""


@pytest.fixture
def chatty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The module name of CHATTY_TASKS, importable from the working directory."""
    module = f"chatty_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(CHATTY_TASKS)
    monkeypatch.chdir(tmp_path)
    return module


def test_a_task_printing_to_stdout_leaves_json_one_document(tmp_path: Path, chatty: str) -> None:
    """What a task prints goes to stderr under --json."""
    task = ["--task", f"python:{chatty}:talks", "--epochs", "2", "--no-track"]
    home = ["--home", str(tmp_path / "home")]
    ran = invoke("run", "--study", "s", *task, "--trials", "2", *home, "--json")
    assert ran.exit_code == 0, ran.stderr
    assert json.loads(ran.stdout)["states"] == {"COMPLETE": 2}
    assert "building the data" in ran.stderr and "a loss printed" in ran.stderr
    trained = invoke("train", *task, *home, "--json")
    assert trained.exit_code == 0, trained.stderr
    assert json.loads(trained.stdout)["epochs_run"] == 2 and "a loss printed" in trained.stderr


@pytest.mark.slow
def test_a_task_printing_in_worker_processes_leaves_json_one_document(
    tmp_path: Path, chatty: str
) -> None:
    """The workers of `run --workers` write to the launcher's file descriptor 1: stderr
    under --json."""
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    env = cli_env(tmp_path / "home", PYTHONPATH=path)
    args = ["--study", "s", "--task", f"python:{chatty}:talks", "--epochs", "2", "--trials", "2"]
    done = run_cli("run", *args, "--workers", "2", "--no-track", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["states"] == {"COMPLETE": 2}
    assert done.stderr.count("a loss printed") > done.stderr.count("building the data") >= 3


def test_a_loss_raising_system_exit_is_one_line_before_any_study(
    tmp_path: Path, chatty: str
) -> None:
    """A loss that ends the process in the Task contract check: one line, exit 2."""
    task, home = f"python:{chatty}:exits_at_once", tmp_path / "home"
    fragment = f"{task}: the model or loss raised SystemExit: 0"
    args = ["--study", "s", "--task", task, "--trials", "2", "--home", str(home)]
    assert_usage_error(invoke("run", *args, "--json"), fragment)
    assert_usage_error(invoke("train", "--task", task, "--home", str(home)), fragment)
    assert not home.exists()


@pytest.mark.slow
def test_a_loss_raising_system_exit_in_training_fails_the_trial(
    tmp_path: Path, chatty: str
) -> None:
    """Past the check, a task's SystemExit fails its trial with the reason, as its
    exceptions do, and `sweeps train` is one line, exit 2."""
    task, home = f"python:{chatty}:exits_in_training", str(tmp_path / "home")
    reason = f"{task} raised SystemExit: 0"
    ran = invoke("run", "--study", "s", "--task", task, "--trials", "2", "--home", home, "--json")
    assert ran.exit_code == 0, ran.stderr
    assert json.loads(ran.stdout)["states"] == {"FAIL": 2}
    assert ran.stderr.count(reason) == 2
    exported = invoke("export", "--study", "s", "--format", "json", "--home", home)
    assert [t["error"] for t in json.loads(exported.stdout)] == [f"TaskError: {reason}"] * 2
    assert_usage_error(invoke("train", "--task", task, "--no-track"), reason)


def test_csv_train_json(table: str) -> None:
    doc = invoke_json(
        "train", "--task", "csv", "--train-csv", table, "--target", "y", "--model", "mlp",
        "--hidden", "8", "--penalize", "layers.0.weight", "--penalty", "l2", "--lambda", "0.1",
        "--batch-size", "0", "--lr", "0.05", "--epochs", "50", "--no-track",
    )  # fmt: skip
    assert doc["task"] == "csv" and doc["task.model"] == "mlp" and doc["task.train_csv"] == table
    assert doc["val_is_test"] is False and doc["test_loss"] != doc["val_loss"]
    assert doc["val_accuracy"] is None  # regression
    assert doc["penalize"] == "layers.0.weight" and doc["penalty_value"] > 0


def test_csv_study_options_reach_workers(tmp_path: Path, table: str) -> None:
    """`sweeps worker` rebuilds the task from the options stored with the study."""
    home = str(tmp_path / "home")
    common = ["--batch-size", "0", "--lr", "0.1", "--epochs", "30", "--seed", "3"]
    invoke_json(
        "run", "--study", "csv", "--task", "csv", "--train-csv", table, "--target", "y",
        "--penalties", "none", "--create-only", "--no-track", "--home", home, *common,
    )  # fmt: skip
    result = invoke("worker", "--study", "csv", "--trials", "1", "--no-track", "--home", home)
    assert result.exit_code == 0, result.stderr
    trials = invoke_json("trials", "--study", "csv", "--home", home)
    single = invoke_json(
        "train", "--task", "csv", "--train-csv", table, "--target", "y", "--no-track", *common
    )
    assert trials[0]["state"] == "COMPLETE" and trials[0]["value"] == single["val_loss"]


@pytest.mark.slow
def test_diabetes_sweep_matches_ridgecv(tmp_path: Path) -> None:
    """A grid sweep of l2 over λ ∈ [1e-4, 1] finds a validation loss within 3% of RidgeCV's
    choice over the same grid (α = n_train·λ) on the same split."""
    from sklearn.linear_model import Ridge, RidgeCV

    doc = invoke_json(
        "run", "--study", "diabetes", "--task", "diabetes", "--penalties", "l2",
        "--sampler", "grid", "--grid-points", "8", "--lambda-min", "1e-4", "--lambda-max", "1",
        "--trials", "8", "--batch", "8", "--batch-size", "0", "--lr", "0.3", "--epochs", "300",
        "--pruner", "none", "--no-track", "--quiet", "--home", str(tmp_path / "home"),
    )  # fmt: skip
    assert doc["states"] == {"COMPLETE": 8}
    best = doc["best"][0]["value"]

    task = load_task(TrialConfig(task="diabetes"))
    X, y = task.train.X.double().numpy(), task.train.y.double().numpy().ravel()
    X_val, y_val = task.val.X.double().numpy(), task.val.y.double().numpy().ravel()
    alphas = len(y) * np.logspace(-4, 0, 8)

    def val_loss(model: Ridge | RidgeCV) -> float:
        return float(np.mean((model.predict(X_val) - y_val) ** 2 / 2))

    ridge_cv = val_loss(RidgeCV(alphas=alphas).fit(X, y))
    oracle = min(val_loss(Ridge(alpha=a).fit(X, y)) for a in alphas)
    assert abs(best - ridge_cv) <= 0.03 * ridge_cv, (best, ridge_cv)
    assert oracle <= best * (1 + 1e-6) and best <= oracle * 1.01, (best, oracle)


@pytest.mark.slow
def test_digits_mlp_sweep_beats_no_penalty(tmp_path: Path) -> None:
    """An MLP on digits overfits without a penalty; the sweep's best l2 trial has a lower
    validation loss. Tracked and batched (vmap path), like any study."""
    home = str(tmp_path / "home")
    doc = invoke_json(
        "run", "--study", "digits", "--task", "digits", "--model", "mlp", "--hidden", "64",
        "--optimizer", "adam", "--lr", "0.01", "--batch-size", "128", "--epochs", "40",
        "--penalties", "none,l2", "--sampler", "grid", "--grid-points", "4",
        "--lambda-min", "1e-4", "--lambda-max", "1e-1", "--trials", "5", "--batch", "5",
        "--pruner", "none", "--quiet", "--home", home,
    )  # fmt: skip
    assert doc["states"] == {"COMPLETE": 5}
    l2 = invoke_json("best", "--study", "digits", "--penalty", "l2", "--home", home)
    none = invoke_json("best", "--study", "digits", "--penalty", "none", "--home", home)
    l2, none = (d[0] if isinstance(d, list) else d for d in (l2, none))
    assert l2["value"] < 0.9 * none["value"], (l2, none)
    assert l2["mlflow_run_id"] and none["mlflow_run_id"]
    assert 0.8 < l2["val_accuracy"] <= 1 and 0.8 < none["val_accuracy"] <= 1  # batched too


@pytest.mark.slow
def test_classification_accuracy_is_tracked_and_stored(tmp_path: Path) -> None:
    """Accuracy reaches every store a trial's losses reach: the MLflow run (final metrics),
    the results row (`trials`, `best`) and the tables people read; regression shows none."""
    from mlflow.tracking import MlflowClient

    home = str(tmp_path / "home")
    doc = invoke_json(
        "run", "--study", "cls", "--task", "digits", "--penalties", "l2", "--trials", "2",
        "--epochs", "3", "--batch-size", "0", "--lr", "0.5", "--pruner", "none", "--quiet",
        "--home", home,
    )  # fmt: skip
    assert doc["states"] == {"COMPLETE": 2}
    rows = invoke_json("trials", "--study", "cls", "--home", home)
    client = MlflowClient(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    for row in rows:
        accuracy = {k: row[k] for k in ("train_accuracy", "val_accuracy", "test_accuracy")}
        assert all(0.5 < v <= 1 for v in accuracy.values()), row  # chance is 0.1
        metrics = client.get_run(row["mlflow_run_id"]).data.metrics
        assert {k: metrics[k] for k in accuracy} == accuracy
    parent = client.get_run(rows[0]["mlflow_run_id"]).data.tags["mlflow.parentRunId"]
    table = Path(client.download_artifacts(parent, "trials.csv", str(tmp_path))).read_text()
    csv_rows = list(csv.DictReader(io.StringIO(table)))
    assert [float(r["val_accuracy"]) for r in csv_rows] == [r["val_accuracy"] for r in rows]
    [best] = invoke_json("best", "--study", "cls", "--home", home)
    chosen = next(r for r in rows if r["number"] == best["trial_number"])
    assert best["val_accuracy"] == chosen["val_accuracy"]
    header = invoke("trials", "--study", "cls", "--home", home).stdout.splitlines()[0].split()
    after_norm = header.index("w_norm") + 1
    assert header[after_norm : after_norm + 2] == ["val_accuracy", "test_accuracy"]

    invoke_json(
        "run", "--study", "reg", "--trials", "1", "--epochs", "2", "--quiet", "--home", home
    )
    [reg] = invoke_json("trials", "--study", "reg", "--home", home)
    assert reg["val_accuracy"] is None
    assert "val_accuracy" not in invoke("best", "--study", "reg", "--home", home).stdout

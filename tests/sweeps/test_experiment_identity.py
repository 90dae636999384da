"""A study's MLflow experiment and parent run are found by the study's identity in the
tracking store being written: never by ids another store gave out, never another study's.
Real SQLite stores and the real CLI, in subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.sweeps.study_helpers import cli_env, run_cli

pytestmark = pytest.mark.slow

ARGS = ["--penalties", "l2", "--epochs", "3", "--trials", "2", "--pruner", "none", "--quiet"]


def _run(env: dict[str, str], study: str = "s1", *extra: str) -> None:
    done = run_cli("run", "--study", study, *ARGS, *extra, env=env)
    assert done.returncode == 0, done.stderr


def _check(env: dict[str, str], *extra: str) -> dict[str, object]:
    done = run_cli("check", "--study", "s1", "--json", *extra, env=env)
    report: dict[str, object] = json.loads(done.stdout)
    return report


def _trial_runs(client: MlflowClient, experiment: str) -> list[str]:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    ours = "tags.`sweeps.role` = 'trial' and tags.`sweeps.study` = 's1'"
    runs = client.search_runs([found.experiment_id], ours)
    return [run.info.run_id for run in runs]


def test_a_resume_against_another_tracking_store_writes_into_the_studys_experiment(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    env = cli_env(home)
    _run(env)  # experiment id 1 in home/mlflow.db
    other = f"sqlite:///{tmp_path / 'other.db'}"
    other_env = {**env, "SWEEPS_TRACKING_URI": other}
    train = run_cli("train", "--penalty", "l2", "--lambda", "1", "--epochs", "2", env=other_env)
    assert train.returncode == 0, train.stderr  # `sweeps-train` takes id 1 there
    _run(other_env)
    client = MlflowClient(other)
    assert len(_trial_runs(client, "s1")) == 2  # the resumed trials, in the study's own
    assert _trial_runs(client, "sweeps-train") == []
    report = _check(other_env)  # the first two trials' runs are in the first store only
    assert not report["consistent"] and len(report["problems"]) == 2  # type: ignore[arg-type]
    assert _check(other_env, "--repair")["consistent"]
    assert _check(other_env)["consistent"] and len(_trial_runs(client, "s1")) == 4


def test_an_emptied_tracking_store_is_not_called_consistent(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = cli_env(home)
    _run(env)
    (home / "mlflow.db").write_bytes(b"")  # zero bytes: MLflow makes a fresh store of it
    report = _check(env)
    assert not report["consistent"], report
    assert all("no MLflow run" in p for p in report["problems"])  # type: ignore[attr-defined]
    assert _check(env, "--repair")["consistent"]
    assert _check(env)["consistent"]
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    assert len(_trial_runs(client, "s1")) == 2


def test_a_study_of_the_same_name_in_another_storage_is_refused(tmp_path: Path) -> None:
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = {**cli_env(tmp_path / "a"), "SWEEPS_TRACKING_URI": tracking}
    _run(first)
    second = {**cli_env(tmp_path / "b"), "SWEEPS_TRACKING_URI": tracking}
    refused = run_cli("run", "--study", "s1", *ARGS, env=second)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "belongs to another study" in lines[0], refused.stderr
    assert len(_trial_runs(MlflowClient(tracking), "s1")) == 2  # nothing added to it
    storage = f"sqlite:///{tmp_path / 'b' / 'sweeps.db'}"
    assert optuna.get_all_study_names(storage) == []  # nor a study in the second storage

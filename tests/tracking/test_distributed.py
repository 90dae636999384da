"""Workers on PostgreSQL logging to a real `mlflow server`: every trial once everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient

from tests.services import PASSWORD, MlflowServer
from tests.sweeps.study_helpers import cli_env, load, run_cli, spent

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TRIALS = 12


def test_workers_log_each_trial_once_to_the_server(
    tmp_path: Path,
    password_role: str,
    mlflow_server: MlflowServer,
) -> None:
    storage = password_role  # a URL whose password must never reach MLflow
    env = cli_env(tmp_path / "h", storage)
    env["SWEEPS_TRACKING_URI"] = mlflow_server.uri
    args = ["--study", "dist", "--workers", "3", "--trials", str(TRIALS), "--epochs", "5"]
    done = run_cli("run", *args, "--penalties", "none,l2,l1", "--quiet", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr

    study = load("dist", storage)
    finished = {t.number: t.state.name for t in study.trials if t.state.is_finished()}
    # Repeats of a finished configuration (`none`) take its result on top of --trials.
    assert len(finished) == len(study.trials) and spent(study.trials, TRIALS)

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("dist")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("sweeps.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweeps.role") == "trial"]
    assert len(parents) == 1, "one parent run shared by every worker"
    numbers = sorted(int(r.data.tags["sweeps.trial_number"]) for r in children)
    assert numbers == sorted(finished)  # each trial exactly once
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert all(r.info.status != "RUNNING" for r in runs)
    role = sa.make_url(storage).username
    assert role
    for run in runs:  # not even a masked storage URL belongs in a run
        everything = json.dumps([run.data.params, run.data.tags])
        assert PASSWORD not in everything and role not in everything

    rows = run_cli("trials", "--study", "dist", "--json", env=env)
    table = json.loads(rows.stdout)
    assert sorted(r["number"] for r in table) == sorted(finished)
    by_run = {r.info.run_id: int(r.data.tags["sweeps.trial_number"]) for r in children}
    assert {r["mlflow_run_id"]: r["number"] for r in table} == by_run

    check = run_cli("check", "--study", "dist", env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    server_log = mlflow_server.log.read_text()
    assert PASSWORD not in server_log

"""Several `sweeps run` starting at once on fresh PostgreSQL databases (storage and MLflow
store): every one succeeds, one study and one parent run result. Real processes, real
PostgreSQL."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.sweeps.study_helpers import cli_env, sweeps_cmd

pytestmark = pytest.mark.slow
STARTS = 3


@pytest.fixture
def mlflow_url(postgres_database: Callable[[str], str]) -> str:
    return postgres_database("sweeps_mlflow")


def test_concurrent_first_starts_on_fresh_postgres_stores(
    tmp_path: Path, postgres_url: str, mlflow_url: str
) -> None:
    env = {**cli_env(tmp_path / "h", postgres_url), "SWEEPS_TRACKING_URI": mlflow_url}
    args = ["run", "--study", "fresh", "--trials", "1", "--epochs", "2", "--penalties", "l2"]
    procs = [
        subprocess.Popen(
            sweeps_cmd(*args, "--quiet"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(STARTS)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * STARTS, errors
    client = MlflowClient(mlflow_url)
    experiment = client.get_experiment_by_name("fresh")
    assert experiment is not None
    parents = client.search_runs(
        [experiment.experiment_id], "tags.`sweeps.role` = 'parent'", run_view_type=3
    )
    assert len(parents) == 1  # the losers' parent runs are not left behind, even deleted

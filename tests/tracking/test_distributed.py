"""Workers on PostgreSQL logging to a real `mlflow server`: every trial once everywhere."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient

from tests.mlflow_server import MlflowServer, mlflow_server  # noqa: F401 (fixture)
from tests.sweeps.study_helpers import cli_env, load, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TRIALS = 12
PASSWORD = "S3cret-pw"


@pytest.fixture
def password_url(postgres_url: str) -> Iterator[str]:
    """The test database as a role with a password: the secret must never reach MLflow."""
    role = f"sweeps_pw_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'"))
        conn.execute(sa.text(f"GRANT ALL ON SCHEMA public TO {role}"))
    parsed = sa.make_url(postgres_url).set(username=role, password=PASSWORD)
    yield parsed.render_as_string(hide_password=False)
    with engine.connect() as conn:  # the role owns tables of the test database
        conn.execute(sa.text(f"DROP OWNED BY {role}"))
        conn.execute(sa.text(f"DROP ROLE {role}"))
    engine.dispose()


def test_workers_log_each_trial_once_to_the_server(
    tmp_path: Path,
    password_url: str,
    mlflow_server: MlflowServer,  # noqa: F811
) -> None:
    storage = password_url
    env = cli_env(tmp_path / "h", storage)
    env["SWEEPS_TRACKING_URI"] = mlflow_server.uri
    args = ["--study", "dist", "--workers", "3", "--trials", str(TRIALS), "--epochs", "5"]
    done = run_cli("run", *args, "--penalties", "none,l2,l1", "--quiet", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr

    study = load("dist", storage)
    finished = {t.number: t.state.name for t in study.trials if t.state.is_finished()}
    assert len(finished) == TRIALS == len(study.trials)

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
    for run in runs:
        everything = json.dumps([run.data.params, run.data.tags])
        assert PASSWORD not in everything

    rows = run_cli("trials", "--study", "dist", "--json", env=env)
    table = json.loads(rows.stdout)
    assert sorted(r["number"] for r in table) == sorted(finished)
    by_run = {r.info.run_id: int(r.data.tags["sweeps.trial_number"]) for r in children}
    assert {r["mlflow_run_id"]: r["number"] for r in table} == by_run

    check = run_cli("check", "--study", "dist", env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    server_log = mlflow_server.log.read_text()
    assert PASSWORD not in server_log

"""Other libraries' log records reach stderr as one line per kind (`sweeps.logs`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import create_postgres_database, drop_postgres_database
from tests.gate import SPEC as GATE_TASK
from tests.gate import Gate
from tests.sweeps.study_helpers import cli_env, start_cli

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def tracking_database() -> Iterator[tuple[str, sa.Engine]]:
    url, admin = create_postgres_database("sweeps_mlflow")
    yield url, admin
    with admin.connect() as conn:
        name = sa.make_url(url).database
        conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
    drop_postgres_database(url, admin)


def test_mlflow_failing_on_its_database_writes_one_line_per_kind_and_no_traceback(
    tmp_path: Path, tracking_database: tuple[str, sa.Engine]
) -> None:
    """MLflow's client (the public path) meets its PostgreSQL database gone for good while
    a study runs: MLflow logs each failed call with SQLAlchemy's whole traceback, which
    must reach stderr as one line, once."""
    tracking, admin = tracking_database
    gate = Gate(tmp_path / "gate")
    env = cli_env(tmp_path / "h", SWEEPS_MLFLOW_PUBLIC="1", SWEEPS_DB_RETRY_S="0", **gate.env)
    env["SWEEPS_TRACKING_URI"] = tracking
    gate.hold(1)  # build 0 is the check of the task, 1 the first trial
    args = ["run", "--study", "gone", "--task", GATE_TASK, "--penalties", "l2"]
    proc = start_cli(*args, "--pruner", "none", "--trials", "3", env=env)
    try:
        gate.wait_until_held()
        name = sa.make_url(tracking).database
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
        gate.release(1)
        _, err = proc.communicate(timeout=300)
    finally:
        gate.release(1)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err, err[-3000:]
    lines = err.strip().splitlines()
    from_mlflow = [line for line in lines if line.startswith("sweeps: warning: mlflow: ")]
    assert from_mlflow, err  # the fault reached MLflow's own logger
    assert len(set(from_mlflow)) == len(from_mlflow), err  # each kind once
    assert all(line.startswith(("sweeps: ", "[")) for line in lines), err


@pytest.mark.parametrize("workers", [1, 2])
def test_a_study_whose_mlflow_writes_all_fail_says_so_once_and_exits_1(
    tmp_path: Path, workers: int
) -> None:
    """The artifacts folder turns into a file while the study runs: every trial's MLflow
    write fails alike. The failure is said once per process, the end counts the trials left
    without a run, and the command exits 1 (`--workers`: each worker, then the launcher)."""
    home = tmp_path / "h"
    gate = Gate(tmp_path / "gate")
    env = cli_env(home, **gate.env)
    trials = 2 * workers
    gate.hold(1)  # build 0 is the check of the task, 1 the first trial
    args = ["run", "--study", "art", "--task", GATE_TASK, "--penalties", "l2", "--pruner", "none"]
    proc = start_cli(*args, "--trials", str(trials), "--workers", str(workers), env=env)
    try:
        gate.wait_until_held()
        artifacts = home / "mlartifacts"
        shutil.rmtree(artifacts, ignore_errors=True)
        artifacts.write_text("not a folder\n")
        gate.release(1)
        _, err = proc.communicate(timeout=300)
    finally:
        gate.release(1)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert "Traceback" not in err, err[-3000:]
    lines = err.strip().splitlines()
    said = [line for line in lines if "MLflow logging failed" in line]
    assert 1 <= len(said) <= workers, err  # once per process that wrote trials
    counted = [line for line in lines if "trial(s) have no MLflow run" in line]
    assert sum(int(line.split()[1]) for line in counted) == trials, err
    assert len(counted) == workers, err

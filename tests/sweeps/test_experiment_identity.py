"""A study's MLflow experiment and parent run are found by the study's identity in the
tracking store being written: never by ids another store gave out, never another study's.
Real SQLite stores and the real CLI, in subprocesses."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from subprocess import PIPE

import optuna
import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient

from tests.sweeps.study_helpers import cli_env, load, run_cli, sweeps_cmd

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
    trials = len(load("s1", f"sqlite:///{home / 'sweeps.db'}").trials)
    # The resumed trials (repeats of a finished configuration on top of --trials), in the
    # study's own experiment.
    assert len(_trial_runs(client, "s1")) == trials - 2 >= 2
    assert _trial_runs(client, "sweeps-train") == []
    report = _check(other_env)  # the first two trials' runs are in the first store only
    assert not report["consistent"] and len(report["problems"]) == 2  # type: ignore[arg-type]
    assert _check(other_env, "--repair")["consistent"]
    assert _check(other_env)["consistent"] and len(_trial_runs(client, "s1")) == trials


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


@pytest.mark.postgres
def test_the_loser_of_a_race_for_the_name_leaves_no_study_behind(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two storages, one tracking store, one study name, both past the up-front check
    before either claims the experiment: the loser is refused and its storage holds no
    study of that name, so that it can run it later against another tracking store.

    The loser is held, past its check, on a lock the test takes on Optuna's studies table
    in its storage while the winner runs."""
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    winner = {**cli_env(tmp_path / "a"), "SWEEPS_TRACKING_URI": tracking}
    loser = {**cli_env(tmp_path / "b", postgres_url), "SWEEPS_TRACKING_URI": tracking}
    optuna.storages.RDBStorage(postgres_url).engine.dispose()  # Optuna's tables, to lock one
    admin = sa.create_engine(postgres_url)
    database = sa.make_url(postgres_url).database
    waiting = sa.text(
        "select count(*) from pg_stat_activity where datname = :db and wait_event_type = 'Lock'"
    )
    with admin.connect() as lock, admin.connect() as watch:
        lock.execute(sa.text("LOCK TABLE studies IN ACCESS EXCLUSIVE MODE"))
        held = subprocess.Popen(
            sweeps_cmd("run", "--study", "same", *ARGS),
            env=loser,
            stdout=PIPE,
            stderr=PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120  # catches a hang only
            while not watch.execute(waiting, {"db": database}).scalar():
                watch.rollback()
                assert held.poll() is None and time.monotonic() < deadline, held.communicate()
                time.sleep(0.1)
            _run(winner, "same")
        finally:
            lock.rollback()
        _, stderr = held.communicate(timeout=300)
    admin.dispose()
    assert held.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "belongs to another study" in lines[0], stderr
    assert "same" not in optuna.get_all_study_names(postgres_url)
    listed = run_cli("studies", "--json", env=loser)
    assert "same" not in [s["study"] for s in json.loads(listed.stdout)]
    alone = {**loser, "SWEEPS_TRACKING_URI": f"sqlite:///{tmp_path / 'own.db'}"}
    _run(alone, "same")
    assert [
        t.state.name for t in optuna.load_study(study_name="same", storage=postgres_url).trials
    ] == [
        "COMPLETE",
        "COMPLETE",
    ]

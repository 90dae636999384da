"""Crash consistency: a worker killed (SIGKILL, for real) at any point of a round of a
tracked study, then a plain resume, leaves every trial exactly once — and in the same
state — in Optuna, the results table and MLflow: `sweeps check` without `--repair` says
consistent.

The kill points (`sweeps.killpoints`) sit between the writes of a round: its trials
created, trained, logged to MLflow, recorded in the results table, told to Optuna.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import optuna
import pytest

from sweeps import killpoints
from sweeps.storage import lost_trials, open_storage
from tests.sweeps.study_helpers import cli_env, run_cli

pytestmark = pytest.mark.slow

HEARTBEAT_S = "1"  # a lost trial is stale after 2 s
STUDY = "crash"


def _run(env: dict[str, str], *extra: str, codes: tuple[int, ...] = (0,)) -> int:
    done = run_cli(
        "run",
        "--study",
        STUDY,
        "--penalties",
        "none,l2",
        "--epochs",
        "4",
        "--report-every",
        "2",
        "--quiet",
        *extra,
        env=env,
    )
    if done.returncode not in codes:
        pytest.fail(f"sweeps run exited {done.returncode}: {done.stderr[-2000:]}")
    return done.returncode


def _wait_until_lost(storage_url: str, deadline_s: float = 120) -> None:
    """Until the killed round's trials count as lost (their heartbeats stale), as they
    would for a worker resuming later; a killed round with nothing RUNNING returns now.
    The storage here uses the workers' heartbeat interval, so "stale" means the same."""
    before = os.environ.get("SWEEPS_HEARTBEAT_S")
    os.environ["SWEEPS_HEARTBEAT_S"] = HEARTBEAT_S
    try:
        storage = open_storage(storage_url)
    finally:
        if before is None:
            del os.environ["SWEEPS_HEARTBEAT_S"]
        else:
            os.environ["SWEEPS_HEARTBEAT_S"] = before
    try:
        study = optuna.load_study(study_name=STUDY, storage=storage)
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        deadline = time.monotonic() + deadline_s
        while len(lost_trials(study, storage)) < len(running):
            assert time.monotonic() < deadline, "the killed trials never went stale"
            time.sleep(0.2)
    finally:
        storage.engine.dispose()


def _check(env: dict[str, str]) -> dict[str, object]:
    done = run_cli("check", "--study", STUDY, "--json", env=env)
    report: dict[str, object] = json.loads(done.stdout)
    assert done.returncode == 0 and report["consistent"] and not report["problems"], report
    finished = report["optuna_finished"]
    assert finished == report["results_rows"] == report["mlflow_runs"], report
    return report


def _kill_then_resume(
    env: dict[str, str], storage_url: str, point: str, *args: str, overlapped: bool = False
) -> None:
    killed = {**env, killpoints.ENV: f"{point}:2"}  # in the second round
    # Killed itself; or (--workers) a launcher that reports its killed workers; or a
    # worker whose recording process was killed writing a round (it says so, exit 1).
    in_child = overlapped and point in ("logged", "recorded")
    _run(killed, *args, codes=(1,) if "--workers" in args or in_child else (-9,))
    _wait_until_lost(storage_url)
    assert _run(env, *args) == 0  # a plain resume: no `check --repair`
    report = _check(env)
    assert isinstance(report["optuna_finished"], int) and report["optuna_finished"] >= 4


@pytest.mark.parametrize("point", killpoints.POINTS)
@pytest.mark.parametrize("batch", [1, 3])
def test_a_plain_resume_heals_a_kill_at_every_point(tmp_path: Path, point: str, batch: int) -> None:
    storage_url = f"sqlite:///{tmp_path / 'h' / 'sweeps.db'}"
    env = cli_env(tmp_path / "h", SWEEPS_HEARTBEAT_S=HEARTBEAT_S)
    trials = ["--trials", str(3 * batch), "--batch", str(batch)]
    # Rounds of 3 are written by the recording process while the next trains.
    _kill_then_resume(env, storage_url, point, *trials, overlapped=batch > 1)


@pytest.mark.parametrize("point", ["asked", "logged", "recorded"])
def test_two_postgres_workers_killed_heal_on_a_plain_resume(
    tmp_path: Path, postgres_url: str, point: str
) -> None:
    env = cli_env(tmp_path / "h", postgres_url, SWEEPS_HEARTBEAT_S=HEARTBEAT_S)
    args = ["--trials", "12", "--workers", "2", "--batch", "3"]
    _kill_then_resume(env, postgres_url, point, *args)

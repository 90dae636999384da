"""A worker paused past the heartbeat's grace period loses its trials to another worker;
when it wakes it writes nothing for them (`sweeps.fencing`): no second MLflow run, no
results row, no tell; it says so on stderr and exits 3. A plain `sweeps check` (no
`--repair`) is then consistent.

The pause is real (SIGSTOP, SIGCONT); the trials are held in flight by the gate task
(tests/gate.py) until the test lets them go.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from sweeps import killpoints
from sweeps.fencing import EXIT_LOST
from tests.gate import SPEC as GATE_TASK
from tests.gate import Gate
from tests.sweeps.study_helpers import (
    cli_env,
    load,
    run_cli,
    start_cli,
    sweeps_cmd,
    wait_until_lost,
)

pytestmark = pytest.mark.slow

HEARTBEAT_S = "1"  # stale after 2 s
STUDY = "paused"


def _running_once_earlier_told(storage_url: str, count: int, timeout_s: float = 120) -> list[int]:
    """The held round's trials, once the rounds before it are told (a recording process
    tells a round while the next one trains)."""
    deadline = time.monotonic() + timeout_s
    while True:
        trials = load(STUDY, storage_url).trials
        running = [t.number for t in trials if t.state is TrialState.RUNNING]
        if len(running) == count:
            return running
        assert time.monotonic() < deadline, f"RUNNING: {running}, expected {count}"
        time.sleep(0.1)


def _check(env: dict[str, str]) -> dict[str, object]:
    done = run_cli("check", "--study", STUDY, "--json", env=env)
    report: dict[str, object] = json.loads(done.stdout)
    assert done.returncode == 0 and report["consistent"] and not report["problems"], report
    assert report["optuna_finished"] == report["results_rows"] == report["mlflow_runs"], report
    return report


@pytest.mark.parametrize(
    ("trials", "batch", "ticket"),
    [
        # Builds: 0 the launcher's pre-flight check, then one per trial (sequential) or
        # one per round (a stacked round's trials share a seed).
        (2, 1, 1),  # trial 0 held
        (6, 3, 2),  # the second round held; the first is written by the recording process
    ],
    ids=["sequential", "batch"],
)
def test_a_paused_worker_writes_nothing_for_trials_taken_over(
    tmp_path: Path, storage_url: str, trials: int, batch: int, ticket: int
) -> None:
    home = tmp_path / "h"
    gate = Gate(tmp_path / "gate")
    env = cli_env(home, storage_url, SWEEPS_HEARTBEAT_S=HEARTBEAT_S, **gate.env)
    study = ["--study", STUDY, "--task", GATE_TASK, "--pruner", "none"]
    gate.hold(ticket)
    paused = start_cli(
        "run", *study, "--penalties", "l1,l2", "--trials", str(trials), "--batch", str(batch),
        env=env,
    )  # fmt: skip
    try:
        gate.wait_until_held()
        held = _running_once_earlier_told(storage_url, batch)
        paused.send_signal(signal.SIGSTOP)
        wait_until_lost(storage_url, STUDY, batch)
        # Another worker fails the stale trials, records them and retries their parameters.
        rescuer = run_cli("worker", "--study", STUDY, "--trials", str(batch), env=env)
        assert rescuer.returncode == 0, rescuer.stderr
    finally:
        gate.release(ticket)
        paused.send_signal(signal.SIGCONT)
    out, err = paused.communicate(timeout=300)

    assert paused.returncode == EXIT_LOST, err
    assert "Traceback" not in out + err
    assert "went to another worker" in err.strip().splitlines()[-1]
    trials_now = {t.number: t for t in load(STUDY, storage_url).trials}
    assert all(trials_now[n].state is TrialState.FAIL for n in held)
    retried = [t for t in trials_now.values() if t.system_attrs.get("failed_trial") in held]
    assert sorted(t.system_attrs["failed_trial"] for t in retried) == held
    _check(env)  # every trial once in Optuna, the results table and MLflow
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(STUDY)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.`sweeps.role` = 'trial'")
    for number in held:
        [run] = [r for r in runs if r.data.tags["sweeps.trial_number"] == str(number)]
        assert (run.info.status, run.data.tags["sweeps.state"]) == ("FAILED", "FAIL")


@pytest.mark.parametrize(
    ("point", "whose_run"),
    [
        # Paused after the fence's first check, before logging: the healer finds no run and
        # makes one; the late run is deleted by the second check.
        (killpoints.OWNED, "healer's"),
        # Paused after logging: the healer adopts the paused worker's run as the trial's;
        # the second check leaves it.
        ("logged", "paused worker's"),
    ],
)
def test_a_worker_paused_between_the_fences_checks_leaves_one_run(
    tmp_path: Path, storage_url: str, point: str, whose_run: str
) -> None:
    home = tmp_path / "h"
    env = cli_env(home, storage_url, SWEEPS_HEARTBEAT_S=HEARTBEAT_S)
    args = ["--study", STUDY, "--penalties", "l2", "--epochs", "3", "--pruner", "none"]
    paused = subprocess.Popen(
        sweeps_cmd("run", *args, "--trials", "1"),
        env={**env, killpoints.STOP_ENV: point},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, status = os.waitpid(paused.pid, os.WUNTRACED)  # it stops itself at `point`
        assert os.WIFSTOPPED(status), status
        wait_until_lost(storage_url, STUDY)
        rescuer = run_cli("worker", "--study", STUDY, "--trials", "1", env=env)
        assert rescuer.returncode == 0, rescuer.stderr
    finally:
        paused.send_signal(signal.SIGCONT)
    out, err = paused.communicate(timeout=300)

    assert paused.returncode == EXIT_LOST, err
    assert "Traceback" not in out + err
    _check(env)
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(STUDY)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.`sweeps.trial_number` = '0'")
    [run] = [r for r in runs if r.data.tags.get("sweeps.role") == "trial"]
    assert (run.info.status, run.data.tags["sweeps.state"]) == ("FAILED", "FAIL")
    # The paused worker's run holds the 3 epochs it trained; the healer's, no history.
    made_by_paused = len(client.get_metric_history(run.info.run_id, "train_loss")) == 3
    assert made_by_paused == (whose_run == "paused worker's")

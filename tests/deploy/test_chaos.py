"""Chaos on the compose topology (tests/deploy/topology.py): a worker killed with SIGKILL in
the middle of a trial and restarted (compose's `restart: on-failure`), and the MLflow server
stopped and restarted while the study runs. The study must still finish, and Optuna, the
results table and MLflow must agree one to one (after `sweeps check --repair`)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.deploy.topology import Topology, compose_topology, env_file_for_test
from tests.services import Popen, Processes
from tests.sweeps.study_helpers import cli_env, load, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TRIALS_PER_WORKER = 4  # a few: to catch the victim mid-logging, to outlast the outage
HEARTBEAT_S = "1"  # stale after 2 s instead of 20 s
RUNNING_TRIAL_RUN = "tags.`sweeps.role` = 'trial' and attributes.status = 'RUNNING'"


def test_killed_worker_and_restarted_server_leave_everything_consistent(
    tmp_path: Path, processes: Processes
) -> None:
    overrides = env_file_for_test(TRIALS_PER_WORKER)
    with compose_topology(tmp_path / "compose", overrides) as topology:
        try:
            _chaos(topology, processes, tmp_path / "h")
        finally:
            processes.kill_all()  # before the databases they use are dropped


def _chaos(topology: Topology, processes: Processes, home: Path) -> None:
    env = {**cli_env(home, SWEEPS_HEARTBEAT_S=HEARTBEAT_S), **topology.sweeps_env("worker")}
    created = subprocess.run(
        topology.sweeps_command("create-study"), env=env, capture_output=True, check=False
    )
    assert created.returncode == 0, created.stderr
    storage, study_name = env["SWEEPS_STORAGE"], topology.study
    client = MlflowClient(topology.server.uri)
    worker = topology.sweeps_command("worker")

    # 1. One worker alone, killed while a trial is in flight: preferably while its MLflow
    #    run is open (the hardest case: an orphaned RUNNING run), else in training.
    study = load(study_name, storage)
    victim = processes.start("worker-0", worker, env)
    killed = _kill_mid_trial(victim, client, study)
    done_before_kill = _good(study)

    # 2. compose restarts it with the same command; the second replica joins.
    names = ["worker-0-restarted", "worker-1"]
    workers = [processes.start(name, worker, env) for name in names]

    # 3. Once both are past start-up (a worker refuses to start without its server, and
    #    compose would restart it), the MLflow server goes away while they work, and
    #    comes back on the same port and database.
    _wait_for(lambda: all("[1/" in processes.log(n) for n in names), 120, "both workers")
    topology.server.stop()
    done_before_outage = _good(study)
    time.sleep(3 * float(HEARTBEAT_S))  # a trial trains in < 1 s: workers now wait on MLflow
    alive = [proc.poll() is None for proc in workers]
    assert any(alive), "both workers were done before the outage: it tested nothing"
    assert all(alive or proc.returncode == 0 for alive, proc in zip(alive, workers, strict=True))
    topology.server.start()
    for name, proc in zip(names, workers, strict=True):
        assert proc.wait(240) == 0, processes.log(name)[-3000:]
    assert _good(study) > done_before_outage

    # 4. The study finished: the killed trial FAIL and retried once, nothing in flight.
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    trials = {t.number: t for t in study.trials}
    assert trials[killed].state is TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].params == trials[killed].params
    assert states.count(TrialState.FAIL) == 1
    # Each worker process ran its --trials (the victim's first life ran done_before_kill
    # and the killed one, whose retry counts for whoever ran it).
    assert _good(study) == done_before_kill + 2 * TRIALS_PER_WORKER

    # 5. check, repair what the kill left, and check again: all three stores agree.
    first = _check(study_name, env)
    print("first check:", first)  # shown by pytest when the test fails: what was repaired
    if not first["consistent"]:
        repaired = _check(study_name, env, "--repair")
        assert repaired["consistent"], repaired
    final = _check(study_name, env)
    assert final["consistent"] and not final["problems"], final
    finished = len(study.trials)
    assert final["optuna_finished"] == final["results_rows"] == final["mlflow_runs"] == finished

    experiment = client.get_experiment_by_name(study_name)
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=1000
    )
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []
    numbers = sorted(
        int(r.data.tags["sweeps.trial_number"])
        for r in runs
        if r.data.tags.get("sweeps.role") == "trial"
    )
    assert numbers == sorted(trials), "one MLflow run per trial"
    assert topology.server.starts == 2


def _kill_mid_trial(victim: Popen, client: MlflowClient, study: optuna.Study) -> int:
    """SIGKILL the worker while a trial is RUNNING; returns that trial's number.

    Preferably while that trial's MLflow run is open (it is then left behind RUNNING);
    failing that, during the worker's last trial. Never within its first moments: Optuna
    only fails a RUNNING trial that has beaten its heartbeat at least once."""
    deadline = time.monotonic() + 120
    first_seen: dict[int, float] = {}
    while time.monotonic() < deadline:
        assert victim.poll() is None, "the worker finished before it could be killed"
        last = _good(study) >= TRIALS_PER_WORKER - 1
        # MLflow first, Optuna right after, then the kill: a run seen open whose trial is
        # still RUNNING is being logged now (a trial ends only after its run is closed).
        open_runs = {
            int(run.data.tags["sweeps.trial_number"])
            for run in _open_runs(client, study.study_name)
        }
        running, now = _running(study), time.monotonic()
        for number in running:
            first_seen.setdefault(number, now)
        ripe = [n for n in running if n in open_runs or (last and now - first_seen[n] > 0.5)]
        if ripe:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            still = _running(study)  # nobody beats for it any more
            assert still == ripe[:1], f"trial {ripe} ended before the kill"
            return still[0]
        time.sleep(0.02)
    raise AssertionError("no trial to kill within 120 s")


def _open_runs(client: MlflowClient, study_name: str) -> list[Run]:
    experiment = client.get_experiment_by_name(study_name)
    if experiment is None:
        return []
    return list(client.search_runs([experiment.experiment_id], RUNNING_TRIAL_RUN))


def _running(study: optuna.Study) -> list[int]:
    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]


def _good(study: optuna.Study) -> int:
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)


def _check(study: str, env: dict[str, str], *extra: str) -> dict[str, Any]:
    done = run_cli("check", "--study", study, "--json", *extra, env=env)
    assert done.returncode in (0, 1), done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert done.returncode == (0 if report["consistent"] else 1), done.stderr
    return report


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")

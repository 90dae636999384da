"""Chaos on the compose topology (tests/deploy/topology.py): a worker killed with SIGKILL in
the middle of a trial and restarted (compose's `restart: on-failure`), and the MLflow server
stopped and restarted while the study runs. The study must still finish, and Optuna, the
results table and MLflow must agree one to one (after `sweeps check --repair`).

The study trains the gate task (tests/gate.py): the trial to kill, and the workers that
must outlive the outage, are held where the test wants them, whatever the machine's speed.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.deploy.topology import Topology, compose_topology, env_file_for_test
from tests.gate import SPEC as GATE_TASK
from tests.gate import Gate
from tests.services import Processes
from tests.sweeps.study_helpers import cli_env, load, run_cli, wait_until_beaten

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TRIALS_PER_WORKER = 4  # a few: the victim dies in its second; the others outlast the outage
HEARTBEAT_S = "1"  # stale after 2 s instead of 20 s


def test_killed_worker_and_restarted_server_leave_everything_consistent(
    tmp_path: Path, processes: Processes
) -> None:
    overrides = env_file_for_test(TRIALS_PER_WORKER)
    with compose_topology(tmp_path / "compose", overrides) as topology:
        try:
            _chaos(topology, processes, tmp_path / "h", Gate(tmp_path / "gate"))
        finally:
            processes.kill_all()  # before the databases they use are dropped


def _chaos(topology: Topology, processes: Processes, home: Path, gate: Gate) -> None:
    env = {
        **cli_env(home, SWEEPS_HEARTBEAT_S=HEARTBEAT_S),
        **topology.sweeps_env("worker"),
        **gate.env,
    }
    # Without `none`: a proposal identical to a finished trial takes its result untrained
    # (`none` has no λ, so repeats of it are), and then builds would not be one per trial.
    # A worker seeds its sampler from its process id, so that would be a matter of chance.
    penalties = ["--penalties", "l1,l2,weight_decay"]
    create = [*topology.sweeps_command("create-study"), "--task", GATE_TASK, *penalties]
    created = subprocess.run(create, env=env, capture_output=True, check=False)
    assert created.returncode == 0, created.stderr
    storage, study_name = env["SWEEPS_STORAGE"], topology.study
    client = MlflowClient(topology.server.uri)
    worker = topology.sweeps_command("worker")

    # 1. One worker alone, killed while its second trial trains (builds: 0 the pre-flight
    #    check of create-study, 1 the victim's first trial, 2 its second).
    study = load(study_name, storage)
    gate.hold(2)
    victim = processes.start("worker-0", worker, env)
    gate.wait_until_held()
    [killed] = _running(study)
    wait_until_beaten(storage, study_name, [killed])  # it has beaten: Optuna's stale check applies
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    gate.release(2)
    assert _running(study) == [killed], "nobody beats for it any more, nobody ended it"
    done_before_kill = _good(study)
    assert done_before_kill == 1

    # 2. compose restarts it with the same command; the second replica joins. Both are
    #    held in their first trial: past start-up (a worker refuses to start without its
    #    server, and compose would restart it), and certain to be mid-study for step 3.
    gate.hold()
    names = ["worker-0-restarted", "worker-1"]
    workers = [processes.start(name, worker, env) for name in names]
    gate.wait_until_held(2)

    # 3. The MLflow server goes away while they work, and comes back on the same port and
    #    database.
    held = [number for number in _running(study) if number != killed]
    topology.server.stop()
    done_before_outage = _good(study)
    gate.release()
    # A trial trains in ms: once the workers have beaten for their trials again, still
    # RUNNING, they are waiting on MLflow's client, which retries the server that is away.
    wait_until_beaten(storage, study_name, held)
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

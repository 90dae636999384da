"""docker/compose.yaml without Docker: its very command lines and environments, as local
processes on the local PostgreSQL and a local `mlflow server`, must run a study to the end.

See tests/deploy/topology.py for what is mapped (hosts, ports, volumes) and what fails
the test instead (anything else the compose file says)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow.tracking import MlflowClient

from tests.deploy.topology import (
    COMPOSE,
    ENV_EXAMPLE,
    SERVER_PORT,
    ComposeDrift,
    Topology,
    compose_topology,
    env_file_for_test,
    interpolate,
    load_compose,
    mlflow_server_args,
    read_dotenv,
)
from tests.services import PASSWORD, MlflowServer, Processes
from tests.sweeps.study_helpers import cli_env, load, run_cli, spent

TRIALS_PER_WORKER = 2  # each trial costs a few seconds on a loaded 2-core machine


def service_env(topology: Topology, service: str, home: Path) -> dict[str, str]:
    return {**cli_env(home), **topology.sweeps_env(service)}


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("    restart: on-failure\n", "    restart: on-failure\n    privileged: true\n"),
        ("@postgres:5432/mlflow", "@db:5432/mlflow"),  # a host nobody maps
        ("  worker:\n", "  trainer:\n"),  # a renamed service
        ("SWEEPS_HOME: /data", "SWEEPS_HOME: /data\n  SWEEPS_DEVICE: cuda"),  # unknown env
        ('--port\n      - "5000"', '--port\n      - "5001"'),  # not the tracking URI's
        ("condition: service_completed_successfully", "condition: service_started"),
    ],
)
def test_what_cannot_be_mapped_fails(old: str, new: str, tmp_path: Path) -> None:
    """The local equivalent refuses what it cannot reproduce (checked without services)."""
    raw = COMPOSE.read_text()
    assert old in raw
    env = read_dotenv(ENV_EXAMPLE)
    _map_everything(load_compose(env), tmp_path)  # the file as it is maps
    with pytest.raises(ComposeDrift):
        _map_everything(load_compose(env, raw.replace(old, new, 1)), tmp_path)


def _map_everything(compose: dict[str, Any], tmp_path: Path) -> None:
    local = "postgresql+psycopg://postgres@127.0.0.1:5432/"
    databases = {"sweeps": local + "a", "mlflow": local + "b"}
    server = MlflowServer([], 5999, tmp_path / "mlflow.log")  # never started
    topology = Topology(compose, {}, databases, server, tmp_path)
    mlflow_server_args(topology, server.port, tmp_path)
    for service in ("create-study", "worker"):
        topology.sweeps_env(service)
        topology.sweeps_command(service)
    topology.replicas("worker")


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d}|${EMPTY:-d}|${EMPTY-d}|${UNSET-d}|$$SET|$SET", env) == (
        "x|d||d|$SET|x"
    )
    with pytest.raises(ComposeDrift, match=r"set in \.env"):
        interpolate("${EMPTY:?set in .env}", env)


@pytest.mark.slow
@pytest.mark.postgres
def test_compose_services_run_a_study_locally(tmp_path: Path, processes: Processes) -> None:
    overrides = env_file_for_test(TRIALS_PER_WORKER)
    with compose_topology(tmp_path / "compose", overrides) as topology:
        try:
            _run_and_check(topology, processes, tmp_path)
        finally:
            processes.kill_all()  # before the databases they use are dropped


def _run_and_check(topology: Topology, processes: Processes, tmp_path: Path) -> None:
    server = topology.server
    _mlflow_healthcheck_passes(topology)
    _allowed_hosts_admit_the_service_name(server.uri)

    created = subprocess.run(
        topology.sweeps_command("create-study"),
        env=service_env(topology, "create-study", tmp_path / "h"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    replicas = topology.replicas("worker")
    assert replicas == 2  # as in .env.example: two workers share the study
    env = service_env(topology, "worker", tmp_path / "h")
    workers = [
        processes.start(f"worker-{i}", topology.sweeps_command("worker"), env)
        for i in range(replicas)
    ]
    deadline = time.monotonic() + 180
    for i, worker in enumerate(workers):
        code = worker.wait(max(1.0, deadline - time.monotonic()))
        assert code == 0, processes.log(f"worker-{i}")

    study_name = topology.study
    storage = env["SWEEPS_STORAGE"]
    study = load(study_name, storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == len(study.trials)
    # Repeats of a finished configuration (`none`) take its result on top of --trials.
    assert spent(study.trials, replicas * TRIALS_PER_WORKER)

    best = run_cli("best", "--study", study_name, "--json", env=env)
    assert best.returncode == 0, best.stderr
    rows = json.loads(best.stdout)
    complete = [t for t in finished if t.state.name == "COMPLETE"]
    winner = min(complete, key=lambda t: (t.value, t.number))
    assert rows[0]["trial_number"] == winner.number and rows[0]["value"] == winner.value
    run = MlflowClient(server.uri).get_run(rows[0]["mlflow_run_id"])
    assert run.data.tags["sweeps.trial_number"] == str(winner.number)

    check = run_cli("check", "--study", study_name, "--json", env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads(check.stdout)
    assert report["consistent"] and not report["problems"], report
    assert report["optuna_finished"] == report["results_rows"] == report["mlflow_runs"]
    assert report["optuna_finished"] == replicas * TRIALS_PER_WORKER
    for name in ("worker-0", "worker-1"):
        assert PASSWORD not in processes.log(name)
    assert PASSWORD not in created.stdout + created.stderr + server.tail(10**6)


def _mlflow_healthcheck_passes(topology: Topology) -> None:
    """The mlflow service's healthcheck command, pointed at the local port."""
    test = topology.services["mlflow"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"], test
    inside = f"127.0.0.1:{SERVER_PORT}"
    code = [arg.replace(inside, f"127.0.0.1:{topology.server.port}") for arg in test[2:]]
    assert code != test[2:], f"the healthcheck does not ask {inside}"
    done = subprocess.run([sys.executable, *code], capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr


def _allowed_hosts_admit_the_service_name(uri: str) -> None:
    """Workers in the compose network send `Host: mlflow:5000`; MLflow's host check
    (--allowed-hosts) must let it through and still refuse other names."""
    api = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(api, headers={"Host": f"mlflow:{SERVER_PORT}"}, timeout=10).ok
    refused = requests.get(api, headers={"Host": "attacker.example"}, timeout=10)
    assert refused.status_code in (400, 403), refused.status_code

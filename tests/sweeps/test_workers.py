"""Several processes on one study: real subprocesses, real SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import create_postgres_database, drop_postgres_database
from tests.gate import SPEC as GATE_TASK
from tests.gate import Gate
from tests.services import PrivatePostgres
from tests.sweeps.study_helpers import cli_env, load, run_cli, spent, sweeps_cmd

pytestmark = pytest.mark.slow


def test_four_workers_forty_trials(tmp_path: Path, storage_url: str) -> None:
    env = cli_env(tmp_path / "h", storage_url)
    done = run_cli(
        "run",
        "--study",
        "mp",
        "--workers",
        "4",
        "--trials",
        "40",
        "--epochs",
        "5",
        "--penalties",
        "l1,l2,none",
        "--no-track",
        "--pruner",
        "none",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    trials = load("mp", storage_url).trials
    assert spent(trials, 40)  # repeats of a finished configuration come on top
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert all(t.state is TrialState.COMPLETE for t in trials)


def test_concurrent_starts_create_one_study(tmp_path: Path, storage_url: str) -> None:
    env = cli_env(tmp_path / "h", storage_url)
    args = [
        "run",
        "--study",
        "race",
        "--trials",
        "2",
        "--epochs",
        "3",
        "--penalties",
        "l2",
        "--no-track",
        "--quiet",
    ]
    procs = [
        subprocess.Popen(sweeps_cmd(*args), env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert optuna.get_all_study_names(storage_url) == ["race"]
    assert spent(load("race", storage_url).trials, 8)


def test_killed_worker_is_failed_and_retried(tmp_path: Path, storage_url: str) -> None:
    gate = Gate(tmp_path / "gate")
    env = cli_env(tmp_path / "h", storage_url, SWEEPS_HEARTBEAT_S="1", **gate.env)
    created = run_cli("run", *_args("kill"), "--trials", "1", "--no-track", "--quiet", env=env)
    assert created.returncode == 0, created.stderr
    gate.hold()  # the victim's trial waits in training until it is killed
    victim = subprocess.Popen(
        sweeps_cmd("worker", "--study", "kill", "--trials", "1", "--no-track", "--quiet"), env=env
    )
    gate.wait_until_held()
    [killed] = [t for t in load("kill", storage_url).trials if t.state is TrialState.RUNNING]
    time.sleep(1.5)  # a heartbeat or two
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    gate.release()
    time.sleep(2.5)  # past the grace period (2 × heartbeat)
    rescuer = run_cli("worker", "--study", "kill", "--trials", "1", "--no-track", env=env)
    assert rescuer.returncode == 0, rescuer.stderr
    trials = {t.number: t for t in load("kill", storage_url).trials}
    assert trials[killed.number].state is TrialState.FAIL
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1
    assert retries[0].params == killed.params and retries[0].state is TrialState.COMPLETE
    assert trials[0].state is TrialState.COMPLETE  # the completed trial survived


@pytest.mark.parametrize(
    ("stop", "inherited", "group"),
    [
        (signal.SIGINT, signal.SIG_DFL, False),
        (signal.SIGINT, signal.SIG_IGN, False),
        (signal.SIGTERM, signal.SIG_DFL, False),
        (signal.SIGTERM, signal.SIG_DFL, True),
        (signal.SIGHUP, signal.SIG_DFL, False),
    ],
    ids=["ctrl-c", "ctrl-c-ignored", "sigterm", "sigterm-group", "sighup"],
)
def test_a_stop_signal_fails_the_current_trial_and_keeps_the_rest(
    tmp_path: Path, stop: signal.Signals, inherited: signal.Handlers, group: bool
) -> None:
    """Ctrl-C, SIGTERM (`scancel`, a preemption, `docker stop`; to the whole process group
    as Slurm sends it) and SIGHUP all end the study the same way, exit 128 + the signal.
    Also when started with SIGINT ignored, as a non-interactive shell starts a background
    job (`make test &`): Python then installs no KeyboardInterrupt handler of its own."""
    gate = Gate(tmp_path / "gate")
    gate.hold(2)  # builds: 0 the launcher's pre-flight check, 1 trial #0, 2 trial #1
    env = cli_env(tmp_path / "h", **gate.env)
    storage = f"sqlite:///{tmp_path / 'h' / 'sweeps.db'}"
    proc = subprocess.Popen(
        sweeps_cmd("run", *_args("int"), "--trials", "3"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, inherited),
        start_new_session=group,
    )
    gate.wait_until_held()
    # Trial #1 is in training now, and stays there: the interrupt cannot come too late.
    assert [t.state for t in load("int", storage).trials] == [
        TrialState.COMPLETE,
        TrialState.RUNNING,
    ]
    if group:
        os.killpg(proc.pid, stop)
    else:
        proc.send_signal(stop)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + stop, err
    assert "interrupted" in err and "Traceback" not in err + out
    states = [t.state for t in load("int", storage).trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL]  # and no trial #2 was started
    # The interrupted trial's MLflow run is closed FAILED, never left RUNNING.
    client = MlflowClient(f"sqlite:///{tmp_path / 'h' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("int")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.`sweeps.role` = 'trial'")
    status = {int(r.data.tags["sweeps.trial_number"]): r.info.status for r in runs}
    assert status == {0: "FINISHED", 1: "FAILED"}


def test_batch_worker_beats_for_its_trials_and_a_killed_one_is_retried(tmp_path: Path) -> None:
    gate = Gate(tmp_path / "gate")
    storage = f"sqlite:///{tmp_path / 'h' / 'sweeps.db'}"
    env = cli_env(tmp_path / "h", storage, SWEEPS_HEARTBEAT_S="1", **gate.env)
    created = run_cli("run", *_args("kb"), "--trials", "1", "--create-only", "--no-track", env=env)
    assert created.returncode == 0, created.stderr
    worker = ["worker", "--study", "kb", "--trials", "3", "--batch", "3", "--no-track", "--quiet"]
    gate.hold()  # the round's one build (its trials share a seed) waits: the round stays
    victim = subprocess.Popen(sweeps_cmd(*worker), env=env)
    gate.wait_until_held()
    assert [t.state for t in load("kb", storage).trials] == [TrialState.RUNNING] * 3
    time.sleep(3)  # past the grace period: only the worker's heartbeats keep them alive
    study = optuna.load_study(study_name="kb", storage=storage)
    optuna.storages.fail_stale_trials(study)
    assert [t.state for t in load("kb", storage).trials] == [TrialState.RUNNING] * 3
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    gate.release()
    time.sleep(2.5)
    rescuer = run_cli(*worker, env=env)
    assert rescuer.returncode == 0, rescuer.stderr
    trials = load("kb", storage).trials
    failed = {t.number: t for t in trials if t.state is TrialState.FAIL}
    retried = [t for t in trials if t.system_attrs.get("failed_trial") in failed]
    assert len(failed) == 3 and len(retried) == 3
    assert all(t.state is TrialState.COMPLETE for t in retried)
    assert {failed[t.system_attrs["failed_trial"]].params["lambda"] for t in retried} == {
        t.params["lambda"] for t in retried
    }


RETRYING = "retrying for up to"  # the one line a process writes when it meets an outage


def test_two_workers_ride_out_a_restart_of_their_postgres_server(
    tmp_path: Path, private_postgres: PrivatePostgres
) -> None:
    """The server stopped (fast shutdown) and started again, for real, while both workers'
    trials are in flight and finish: everything waits for it and goes on."""
    storage = private_postgres.create_database("sweeps")
    tracking = private_postgres.create_database("mlflow")

    @contextmanager
    def restart() -> Iterator[None]:
        private_postgres.stop()
        try:
            yield
        finally:
            private_postgres.start()

    _study_through_outage(tmp_path, storage, tracking, restart)


def test_two_workers_ride_out_their_connections_dropped_and_refused(tmp_path: Path) -> None:
    """On the shared server: the study's sessions terminated by an administrator and its
    databases refusing connections for a while, as during a restart."""
    storage, admin = create_postgres_database()
    tracking, tracking_admin = create_postgres_database("sweeps_mlflow")
    names = [sa.make_url(url).database for url in (storage, tracking)]

    @contextmanager
    def refused() -> Iterator[None]:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = ANY(:names) AND pid <> pg_backend_pid()"
                ),
                {"names": names},
            )
        try:
            yield
        finally:
            with admin.connect() as conn:
                for name in names:
                    conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))

    try:
        _study_through_outage(tmp_path, storage, tracking, refused)
    finally:
        drop_postgres_database(tracking, tracking_admin)
        drop_postgres_database(storage, admin)


def _study_through_outage(
    tmp_path: Path,
    storage: str,
    tracking: str,
    outage: Callable[[], AbstractContextManager[None]],
) -> None:
    """`sweeps run --workers 2` on PostgreSQL stores; while its first two trials are held,
    the `outage` begins; they are let go, and it ends once the launcher and both workers
    have met it (each says so, once). The study must end as if nothing happened."""
    gate = Gate(tmp_path / "gate")
    env = cli_env(tmp_path / "h", storage, **gate.env)
    env["SWEEPS_TRACKING_URI"] = tracking
    gate.hold(1)  # build 0 is the launcher's check of the task; 1 and 2 the workers' trials
    gate.hold(2)
    errors = tmp_path / "run.err"
    with errors.open("w") as err:
        args = ["run", *_args("outage"), "--trials", "4", "--workers", "2"]
        proc = subprocess.Popen(
            sweeps_cmd(*args), env=env, stdout=subprocess.PIPE, stderr=err, text=True
        )
    try:
        gate.wait_until_held(2)
        with outage():
            gate.release(1)  # the trials end and are written while the server is away
            gate.release(2)
            deadline = time.monotonic() + 120  # only catches a hang
            while errors.read_text().count(RETRYING) < 3:
                assert proc.poll() is None, errors.read_text()
                assert time.monotonic() < deadline, errors.read_text()
                time.sleep(0.05)
        out, _ = proc.communicate(timeout=300)
    finally:
        gate.release(1)
        gate.release(2)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = errors.read_text()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "sweeps: error" not in stderr, stderr
    assert "study outage: 4 complete" in out, out
    trials = load("outage", storage).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state is TrialState.COMPLETE for t in trials)
    check = run_cli("check", "--study", "outage", "--json", env=env)
    report = json.loads(check.stdout)
    assert check.returncode == 0 and report["consistent"], report
    assert report["optuna_finished"] == report["results_rows"] == report["mlflow_runs"] == 4


def _args(study: str) -> list[str]:
    """A study of the gate task (tests/gate.py): its trials wait where the test holds them."""
    return ["--study", study, "--task", GATE_TASK, "--penalties", "l2", "--pruner", "none"]

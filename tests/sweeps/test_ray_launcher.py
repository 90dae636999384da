"""`sweeps run --launcher ray` on a real Ray cluster started by the tests (tests/ray_cluster.py):
workers placed on their own (declared) GPUs, a killed worker started again by Ray, Ctrl-C
stopping every worker, stores on a local path refused on a cluster of two nodes, and the
one-line errors of a missing Ray or an address nobody answers at.

The trials are held in training by the gate task (tests/gate.py) where a test needs one in
flight: the worker killed or interrupted there is mid-round (its round's trials RUNNING)
while its heartbeat goes on, and nothing depends on how long training takes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.gate import SPEC as GATE_TASK
from tests.gate import Gate
from tests.ray_cluster import RAY_ENV, RayCluster, start_cluster
from tests.sweeps.cli_helpers import assert_usage_error, invoke
from tests.sweeps.study_helpers import (
    cli_env,
    load,
    run_cli,
    spent,
    start_cli,
    wait_for,
    wait_until_lost,
)

pytestmark = pytest.mark.slow

WAIT_S = 300.0  # only catches a hang


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


def sweeps_workers(home: Path) -> dict[int, int]:
    """pid -> --worker-index of the `sweeps worker` processes whose SWEEPS_HOME is `home`
    (not their recording processes, forked children with the same command line)."""
    found: dict[int, tuple[int, int]] = {}  # pid -> (parent pid, index)
    marker = f"SWEEPS_HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv[1:4] != [b"-m", b"sweeps", b"worker"]:
                continue
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile, or not ours to read
        index = int(argv[argv.index(b"--worker-index") + 1])
        found[int(entry.name)] = (parent, index)
    return {pid: index for pid, (parent, index) in found.items() if parent not in found}


def wait_held(gate: Gate, driver: subprocess.Popen[str], count: int) -> None:
    """Until `count` builds are held; fails at once with the launcher's stderr if it ends."""
    wait_for(
        f"{count} builds held", lambda: len(gate.waiting()) >= count or driver.poll() is not None
    )
    if driver.poll() is not None:
        pytest.fail(f"sweeps run exited {driver.returncode}: {driver.communicate()[1][-3000:]}")


def ray_args(cluster: RayCluster, study: str, *extra: str) -> list[str]:
    return ["run", "--study", study, "--launcher", "ray", "--ray-address", cluster.address, *extra]


def test_workers_on_their_own_gpus_and_a_killed_one_restarted(
    tmp_path: Path, postgres_url: str, ray_cluster: RayCluster
) -> None:
    gate = Gate(tmp_path / "gate")
    home = tmp_path / "h"
    env = cli_env(home, postgres_url, SWEEPS_HEARTBEAT_S="1", **gate.env)
    gate.hold(1)  # ticket 0 is the launcher's pre-flight build; 1 and 2 the workers' first
    gate.hold(2)  # rounds (one build per round of --batch)
    args = ray_args(ray_cluster, "ray", "--workers", "2", "--gpus-per-worker", "1")
    args += ["--trials", "32", "--batch", "4", "--task", GATE_TASK, "--epochs", "3"]
    args += ["--penalties", "l1,l2", "--device", "cpu", "--quiet", "--json"]
    driver = start_cli(*args, env=env)
    try:
        wait_held(gate, driver, 2)
        workers = sweeps_workers(home)
        assert sorted(workers.values()) == [0, 1], workers
        [victim] = [pid for pid, index in workers.items() if index == 1]
        os.kill(victim, signal.SIGKILL)  # mid-round: its 4 trials RUNNING, in training
        wait_until_lost(postgres_url, "ray", count=4)
        gate.release(1)
        gate.release(2)
        out, err = driver.communicate(timeout=WAIT_S)
    finally:
        gate.release(1)
        gate.release(2)
        driver.kill()
    assert driver.returncode == 0, err[-3000:]
    reports = json.loads(out)["workers"]
    # Worker 1 ended 0: Ray ran its task again after its process was killed.
    assert [(r["index"], r["exit_code"]) for r in reports] == [(0, 0), (1, 0)], reports
    assert sorted(tuple(r["gpus"]) for r in reports) == [("0",), ("1",)], reports
    trials = load("ray", postgres_url).trials
    failed = [t for t in trials if t.state is TrialState.FAIL]
    assert len(failed) == 4  # the killed round, each retried once and finished
    for trial in failed:
        [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == trial.number]
        assert retry.params == trial.params and retry.state.is_finished()
        assert retry.state is not TrialState.FAIL
    assert spent([t for t in trials if t.state is not TrialState.FAIL], 32)
    checked = run_cli("check", "--study", "ray", "--json", env=env)
    report = json.loads(checked.stdout)
    assert checked.returncode == 0 and report["consistent"], report
    assert report["optuna_finished"] == report["results_rows"] == report["mlflow_runs"], report


def test_ctrl_c_stops_every_worker(tmp_path: Path, ray_cluster: RayCluster) -> None:
    gate = Gate(tmp_path / "gate")
    home = tmp_path / "h"
    env = cli_env(home, **gate.env)
    gate.hold(1)
    gate.hold(2)
    args = ray_args(ray_cluster, "int", "--workers", "2", "--gpus-per-worker", "0.5")
    args += ["--trials", "8", "--task", GATE_TASK, "--epochs", "2", "--penalties", "l2"]
    driver = start_cli(*args, "--no-track", "--quiet", env=env)
    try:
        wait_held(gate, driver, 2)
        assert len(sweeps_workers(home)) == 2
        driver.send_signal(signal.SIGINT)  # the launcher only, as `kill -INT` does
        _, err = driver.communicate(timeout=WAIT_S)
    finally:
        gate.release(1)
        gate.release(2)
        driver.kill()
    assert driver.returncode == 130, err[-3000:]
    assert "interrupted" in err
    wait_for("no worker left", lambda: not sweeps_workers(home), timeout_s=60)
    trials = load("int", f"sqlite:///{home / 'sweeps.db'}").trials
    assert trials and not [t for t in trials if t.state is TrialState.RUNNING]


def test_the_library_leaves_this_process_as_it_was(tmp_path: Path, ray_cluster: RayCluster) -> None:
    """Connecting changes no signal handler (ray.init sets a SIGTERM one of its own, which
    would end `sweeps run` on the spot instead of cancelling its workers), and a one-node
    cluster takes the local stores."""
    from sweeps.launchers import RayLauncher
    from sweeps.storage import resolve_stores

    def ours(signum: int, frame: object) -> None:
        raise AssertionError("not called")

    before = signal.signal(signal.SIGTERM, ours)
    launcher = RayLauncher(ray_cluster.address, gpus_per_worker=1)
    try:
        launcher.prepare(resolve_stores(str(tmp_path / "h"), None, None), True)
        assert signal.getsignal(signal.SIGTERM) is ours
    finally:
        launcher.close()
        signal.signal(signal.SIGTERM, before)
    import ray

    assert not ray.is_initialized()  # disconnected by close()


def test_local_stores_refused_on_two_nodes(tmp_path: Path, ray_cluster: RayCluster) -> None:
    node = ray_cluster.add_node()  # registered with the head once started
    try:
        home = tmp_path / "h"
        done = run_cli(*ray_args(ray_cluster, "s", "--workers", "2"), env=cli_env(home))
    finally:
        ray_cluster.remove_node(node)
        wait_for("one node alive", lambda: ray_cluster.alive_nodes() == 1)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "a Ray cluster of 2 nodes needs stores that every machine reaches" in line
    assert "PostgreSQL" in line and "MLflow server" in line and "Traceback" not in line
    assert not home.exists()  # nothing written


def test_a_local_ray_instance_when_no_address(tmp_path: Path) -> None:
    home = tmp_path / "h"
    env = {k: v for k, v in cli_env(home).items() if k != "RAY_ADDRESS"}
    ray_files = Path(tempfile.mkdtemp(prefix="sweeps-ray-"))  # short: Ray's socket paths
    env.update(RAY_ENV, RAY_TMPDIR=str(ray_files))  # nothing left in /tmp/ray or ~/.ray
    args = ["run", "--study", "local", "--launcher", "ray", "--trials", "2", "--epochs", "3"]
    args += ["--penalties", "l2", "--no-track", "--quiet", "--json"]
    try:
        done = run_cli(*args, env=env, timeout=WAIT_S)
    finally:
        shutil.rmtree(ray_files, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = json.loads(done.stdout)["workers"]  # one worker, on Ray: no GPU asked for
    assert [(r["index"], r["exit_code"], r["gpus"]) for r in reports] == [(0, 0, [])]
    assert spent(load("local", f"sqlite:///{home / 'sweeps.db'}").trials, 2)


def test_missing_ray_is_one_line(tmp_path: Path) -> None:
    """Ray made unimportable in the command's process, as where it is not installed."""
    home = tmp_path / "h"
    code = (
        "import sys; sys.modules['ray'] = None; from sweeps.cli import main;"
        " sys.argv = ['sweeps', *sys.argv[1:]]; main()"
    )
    args = ["run", "--study", "s", "--launcher", "ray", "--workers", "2", "--trials", "2"]
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line == (
        "sweeps: error: --launcher ray needs Ray, which is not installed: pip install 'sweeps[ray]'"
    )
    assert not home.exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--gpus-per-worker", "1"], "--gpus-per-worker places workers on a cluster"),
        (["--ray-address", "127.0.0.1:1"], "--ray-address places workers on a cluster"),
        (["--launcher", "ray", "--gpus-per-worker", "-1"], "--gpus-per-worker must be >= 0"),
        (["--launcher", "ray", "--cpus-per-worker", "0"], "--cpus-per-worker must be > 0"),
        (["--launcher", "ray", "--devices", "cuda:0,cuda:1"], "--devices spreads local workers"),
    ],
)
def test_bad_launcher_options(tmp_path: Path, args: list[str], fragment: str) -> None:
    home = tmp_path / "h"
    result = invoke("run", "--study", "s", "--workers", "2", *args, "--home", str(home))
    assert_usage_error(result, fragment)
    assert not home.exists()


def test_an_address_nobody_answers_at(tmp_path: Path) -> None:
    from tests.services import free_port

    home = tmp_path / "h"
    address = f"127.0.0.1:{free_port()}"
    args = ["--launcher", "ray", "--ray-address", address, "--home", str(home)]
    result = invoke("run", "--study", "s", "--workers", "2", "--trials", "2", *args)
    assert_usage_error(result, f"no Ray cluster answers at {address}")
    assert not home.exists()

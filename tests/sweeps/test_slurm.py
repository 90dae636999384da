"""`sweeps run --launcher slurm` on a real single-node Slurm cluster (munge, slurmctld,
slurmd from Debian's packages, deploy/slurm/local-cluster.sh): one job array of
`sweeps worker` elements, followed, detached, requeued, cancelled.

Elements are held where a test needs them by the worker's own pause point
(SWEEPS_STOP_AT, sweeps/killpoints.py) or the gate task (tests/gate.py), never by timing.
"""

from __future__ import annotations

import json
import re
import signal
import uuid
from pathlib import Path

import pytest
from optuna.trial import FrozenTrial, TrialState

from sweeps.attr_keys import SHARE_ATTR
from tests.gate import SPEC as GATE_TASK
from tests.gate import Gate
from tests.services import PASSWORD
from tests.sweeps.cli_helpers import assert_usage_error, invoke
from tests.sweeps.slurm_helpers import (
    Jobs,
    elements,
    eligible_now,
    job_of,
    listed,
    slurm,
    slurm_cluster,
    slurm_jobs,
    stopped,
    wait_for,
)
from tests.sweeps.study_helpers import cli_env, load, run_cli, start_cli, wait_until_lost

pytestmark = pytest.mark.slow
__all__ = ["slurm_cluster", "slurm_jobs"]  # fixtures

TINY = ["--epochs", "3", "--penalties", "l2", "--pruner", "none"]
HEARTBEAT_S = "3"  # the workers' heartbeat interval where two run side by side (see its use)


def _study(jobs: Jobs) -> str:
    """A study name no other test's job shares, its job cancelled at teardown."""
    name = f"sl-{uuid.uuid4().hex[:8]}"
    jobs.names.append(f"sweeps-{name}")
    return name


def _consistent(study: str, env: dict[str, str], trials: int) -> None:
    """`sweeps check` says every trial is once in Optuna, the results and MLflow."""
    check = invoke("check", "--study", study, "--json", env=env)
    report = json.loads(check.stdout)
    assert check.exit_code == 0 and report["consistent"], report
    assert report["optuna_finished"] == report["results_rows"] == report["mlflow_runs"] == trials


def _retry_of(lost: FrozenTrial, trials: list[FrozenTrial]) -> FrozenTrial:
    """The one retry of a trial failed as lost (the heartbeat rule)."""
    [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == lost.number]
    return retry


@pytest.mark.usefixtures("slurm_cluster")
def test_array_completes_a_study_and_a_requeued_element_runs_the_rest_of_its_share(
    tmp_path: Path, password_role: str, slurm_jobs: Jobs
) -> None:
    """17 trials over 2 elements (shares 9 and 8) on PostgreSQL, tracked. Element 0 stops
    itself in its 9th (last) trial, its trial goes stale, and Slurm requeues it: the new
    process fails and retries that trial and runs nothing more, so each share is told
    exactly once. The storage's password is in no Slurm record of the job."""
    study = _study(slurm_jobs)
    # The requeued element and element 1 run side by side and each fails the other's trials
    # whose heartbeat looks stale: a beat waits behind its worker's transaction in hand (one
    # storage connection), so a grace of 2 × 3 s rides out a busy machine, where 2 × 1 s
    # need not.
    env = cli_env(tmp_path / "h", password_role, SWEEPS_HEARTBEAT_S=HEARTBEAT_S)
    env["SWEEPS_STOP_AT"] = "trained:9"
    args = ["run", "--study", study, "--launcher", "slurm", "--workers", "2", "--trials", "17"]
    proc = start_cli(*args, *TINY, env=env)
    try:
        job = job_of(f"sweeps-{study}")
        first = stopped(job, 0)
        wait_until_lost(password_role, study, heartbeat_s=HEARTBEAT_S)
        shown = [
            slurm("scontrol", "-dd", "show", "job", job),
            slurm("squeue", f"--jobs={job}", "--format=%all"),
            slurm("scontrol", "write", "batch_script", job, "-"),
        ]
        assert all(PASSWORD not in text for text in shown)
        slurm("scontrol", "requeue", f"{job}_0")
        eligible_now(f"{job}_0")

        def stopped_again() -> bool:  # a restart that ran its whole share again stops anew
            again = elements(job).get(0)
            return again is not None and again.pid != first.pid and again.state == "T"

        wait_for("the launcher's end", lambda: proc.poll() is not None or stopped_again())
        assert proc.poll() is not None, "the requeued element ran past the rest of its share"
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert PASSWORD not in out + err
    assert "worker:  0 on " in out and "worker:  1 on " in out, out  # scontrol's nodes
    assert "Restarts=1" in slurm("scontrol", "show", "job", f"{job}_0")
    trials = load(study, password_role).trials
    [lost] = [t for t in trials if t.state is TrialState.FAIL]
    told: dict[str, int] = {}
    for t in trials:
        if SHARE_ATTR in t.user_attrs:
            share = t.user_attrs[SHARE_ATTR].rsplit(".", 1)[1]
            told[share] = told.get(share, 0) + 1
    assert told == {"0": 9, "1": 8}
    assert SHARE_ATTR not in lost.user_attrs  # the healer's, not a worker's tell
    retry = _retry_of(lost, trials)
    assert retry.params == lost.params and retry.state is TrialState.COMPLETE
    assert len(trials) == 18
    _consistent(study, env, 18)
    for log in (tmp_path / "h" / "slurm").glob(f"{job}_*.out"):
        assert PASSWORD not in log.read_text()


@pytest.mark.usefixtures("slurm_cluster")
def test_detach_returns_and_a_cancelled_element_heals_on_a_plain_resume(
    tmp_path: Path, postgres_url: str, slurm_jobs: Jobs
) -> None:
    """`--detach` prints the job and returns 0 while the array runs; element 0 (share 3 of
    5) is held in its last trial and scancelled; a plain `sweeps run` resumes: the lost
    trial is failed, retried, and every trial is in the three stores once."""
    study = _study(slurm_jobs)
    env = cli_env(tmp_path / "h", postgres_url, SWEEPS_HEARTBEAT_S="1")
    args = ["run", "--study", study, "--launcher", "slurm", "--workers", "2", "--trials", "5"]
    detached = run_cli(*args, *TINY, "--detach", env={**env, "SWEEPS_STOP_AT": "trained:3"})
    assert detached.returncode == 0, detached.stderr
    found = re.search(r"submitted as Slurm job (\d+)", detached.stdout)
    assert found, detached.stdout
    job = found.group(1)
    assert f"squeue -j {job}" in detached.stdout and "sweeps trials --study" in detached.stdout
    assert listed(job)  # element 0 is held in its last trial: the array cannot have ended
    stopped(job, 0)
    wait_until_lost(postgres_url, study)
    slurm("scancel", f"{job}_0")
    wait_for(f"job {job} gone from squeue", lambda: not listed(job))
    resumed = run_cli("run", "--study", study, "--trials", "1", *TINY, "--quiet", env=env)
    assert resumed.returncode == 0, resumed.stderr
    trials = load(study, postgres_url).trials
    [lost] = [t for t in trials if t.state is TrialState.FAIL]
    retry = _retry_of(lost, trials)
    assert retry.params == lost.params and retry.state is TrialState.COMPLETE
    assert sorted(t.number for t in trials) == list(range(6))  # 2 + 2 told, lost, retry
    _consistent(study, env, 6)


@pytest.mark.usefixtures("slurm_cluster")
def test_ctrl_c_cancels_the_array_and_each_element_has_its_own_gpu(
    tmp_path: Path, slurm_jobs: Jobs
) -> None:
    """Both elements held in their first trial (the gate) with a fake GPU each from
    Slurm's gres; Ctrl-C on the launcher interrupts them, and the array is gone."""
    study = _study(slurm_jobs)
    gate = Gate(tmp_path / "gate")
    gate.hold(1)  # build 0 is the launcher's check of the task; 1 and 2 the elements'
    gate.hold(2)
    env = cli_env(tmp_path / "h", **gate.env)
    args = ["run", "--study", study, "--task", GATE_TASK, "--penalties", "l2", "--pruner", "none"]
    slurm_args = ["--launcher", "slurm", "--workers", "2", "--gpus-per-worker", "1"]
    proc = start_cli(*args, *slurm_args, "--trials", "4", env=env)
    try:
        gate.wait_until_held(2)
        job = job_of(f"sweeps-{study}")
        held = elements(job)
        assert {e.env.get("CUDA_VISIBLE_DEVICES") for e in held.values()} == {"0", "1"}
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        gate.release(1)
        gate.release(2)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in out + err
    assert not listed(job)
    states = [t.state for t in load(study, f"sqlite:///{tmp_path / 'h' / 'sweeps.db'}").trials]
    assert states == [TrialState.FAIL, TrialState.FAIL]  # recorded as interrupted
    _consistent(study, env, 2)


@pytest.mark.usefixtures("slurm_cluster")
def test_slurm_refusing_the_array_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """`sbatch --test-only` sees the array before any store or study is written."""
    home = tmp_path / "h"
    args = ["run", "--study", "no", "--home", str(home), "--launcher", "slurm", *TINY]
    for extra, said in (
        (["--partition", "no-such-partition"], "invalid partition"),
        (["--gpus-per-worker", "3"], "not available"),  # the node has 2
    ):
        assert_usage_error(invoke(*args, *extra), "Slurm refuses the job array", said)
    assert not home.exists()


def test_bad_slurm_options_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    home = tmp_path / "h"
    base = ["run", "--study", "bad", "--home", str(home), "--trials", "2", *TINY]
    slurm_run = [*base, "--launcher", "slurm"]
    cases = [
        ([*slurm_run, "--time", "1:2:3:4"], "--time must be a Slurm time limit"),
        ([*slurm_run, "--time", "soon"], "--time must be a Slurm time limit"),
        ([*slurm_run, "--gpus-per-worker", "0.5"], "whole number"),
        ([*slurm_run, "--cpus-per-worker", "0"], "--cpus-per-worker must be"),
        ([*slurm_run, "--slurm-arg", "foo"], "one sbatch option"),
        ([*slurm_run, "--slurm-arg=--array=0-3"], "set by sweeps itself"),
        ([*slurm_run, "--devices", "cpu,cpu"], "this launcher gives each its GPUs"),
        ([*slurm_run, "--detach", "--confirm", "6"], "confirm waits for the study's end"),
        ([*base, "--time", "10"], "--time is an option of --launcher slurm"),
        ([*base, "--detach"], "--detach is an option of --launcher slurm"),
        ([*base, "--gpus-per-worker", "1"], "add --launcher ray or slurm"),
        ([*slurm_run, "--ray-address", "h:1"], "--ray-address is an option of --launcher ray"),
    ]
    for args, said in cases:
        assert_usage_error(invoke(*args), said)
    empty = tmp_path / "empty"  # a PATH without Slurm's commands
    empty.mkdir()
    no_slurm = invoke(*slurm_run, env={"PATH": str(empty)})
    assert_usage_error(no_slurm, "needs Slurm's commands on PATH", "sbatch is not there")
    assert not home.exists()

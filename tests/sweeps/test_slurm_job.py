"""The Slurm job array of a plan, without a cluster: its batch script run by a real `sh`,
its `sbatch` line, and `scontrol`'s records of its elements read back."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sweeps.errors import UsageError
from sweeps.launchers import WorkerPlan
from sweeps.launchers.slurm_job import (
    SlurmOptions,
    batch_script,
    elements,
    job_id,
    sbatch_command,
)

SECRET = "postgresql+psycopg://u:S3cret-pw@db/sweeps"
PLAN = WorkerPlan(
    'it\'s a "study" $HOME',
    [
        ["--study", 'it\'s a "study" $HOME', "--trials", "3", "--share-id", "a.0"],
        ["--study", 'it\'s a "study" $HOME', "--trials", "2", "--share-id", "a.1"],
    ],
    {"SWEEPS_STORAGE": SECRET},
)


@pytest.mark.parametrize("index", [0, 1])
def test_each_element_runs_its_own_worker_command_line(tmp_path: Path, index: int) -> None:
    """The script, run by sh as Slurm runs it, execs `python -m sweeps worker ARGS` with
    element i's arguments exactly (quotes, spaces and $ kept)."""
    python = tmp_path / "python"  # prints the arguments it was given, one a line
    python.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    python.chmod(0o755)
    script = tmp_path / "job.sh"
    script.write_text(batch_script(PLAN, python=str(python)))
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(index)}
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["-m", "sweeps", "worker", *PLAN.argv[index]]


def test_an_element_outside_the_plan_fails(tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text(batch_script(PLAN))
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "7"}
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "no worker for element 7" in done.stderr


def test_the_sbatch_line_asks_for_the_resources_and_names_no_store(tmp_path: Path) -> None:
    options = SlurmOptions(
        gpus_per_worker=1,
        cpus_per_worker=4,
        time="1-00:30:00",
        partition="gpu",
        extra=("--account=proj", "--output=/elsewhere/%j.out"),
        logs=tmp_path / "100%",
    )
    line = sbatch_command(PLAN, options, test_only=False)
    assert line[:2] == ["sbatch", "--parsable"]
    for wanted in (
        "--array=0-1",
        "--export=ALL",
        "--requeue",
        "--open-mode=append",
        "--cpus-per-task=4",
        "--gres=gpu:1",
        "--time=1-00:30:00",
        "--partition=gpu",
        f"--output={tmp_path}/100%%/%A_%a.out",
    ):
        assert wanted in line
    # --slurm-arg comes last: sbatch takes an option's last value.
    assert line[-2:] == ["--account=proj", "--output=/elsewhere/%j.out"]
    assert "--test-only" in sbatch_command(PLAN, options, test_only=True)
    assert not any("gres" in arg for arg in sbatch_command(PLAN, SlurmOptions(), test_only=False))
    assert "S3cret-pw" not in " ".join(line) + batch_script(PLAN)


@pytest.mark.parametrize(
    "good", ["30", "90:00", "2:00:00", "1-0", "1-12:30", "7-00:00:00", "UNLIMITED"]
)
def test_slurm_time_limits_pass(good: str) -> None:
    assert SlurmOptions(time=good).time == good


@pytest.mark.parametrize("bad", ["", "1h", "1:2:3:4", "-5", "1-", "1-2-3", "10 "])
def test_other_time_limits_are_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="--time must be a Slurm time limit"):
        SlurmOptions(time=bad)


def test_job_id_from_parsable_output() -> None:
    assert job_id("1234\n") == "1234"
    assert job_id("1234;cluster\n") == "1234"
    with pytest.raises(ValueError):
        job_id("sbatch: error: nope")


def test_elements_read_from_scontrol_records() -> None:
    records = "\n".join(
        [
            "JobId=11 ArrayJobId=10 ArrayTaskId=1 JobState=COMPLETED Reason=None ExitCode=0:0",
            "JobId=10 ArrayJobId=10 ArrayTaskId=0 JobState=FAILED Reason=NonZeroExitCode"
            " ExitCode=3:0",
            "JobId=12 ArrayJobId=10 ArrayTaskId=2 JobState=CANCELLED Reason=None ExitCode=0:15",
            "JobId=13 ArrayJobId=10 ArrayTaskId=3-4,6%2 JobState=CANCELLED ExitCode=0:0",
        ]
    )
    found = [(e.index, e.state, e.code) for e in elements(records)]
    assert found == [
        (0, "FAILED", 3),
        (1, "COMPLETED", 0),
        (2, "CANCELLED", -15),
        (3, "CANCELLED", 1),
        (4, "CANCELLED", 1),
        (6, "CANCELLED", 1),
    ]


def test_a_running_elements_node_and_gpus_from_scontrol_details() -> None:
    records = "\n".join(
        [
            "JobId=5 ArrayTaskId=0 JobState=RUNNING ExitCode=0:0 NodeList=gpu7"
            " JOB_GRES=gpu:2 Nodes=gpu7 CPU_IDs=0-1 Mem=0 GRES=gpu:2(IDX:0-1)",
            "JobId=6 ArrayTaskId=1 JobState=RUNNING NodeList=gpu8 GRES=gpu:a100:1(IDX:3)",
            "JobId=4 ArrayTaskId=2-3 JobState=PENDING NodeList=",
        ]
    )
    found = [(e.index, e.node, e.gpus) for e in elements(records)]
    assert found == [
        (0, "gpu7", ("0", "1")),
        (1, "gpu8", ("3",)),
        (2, None, ()),
        (3, None, ()),
    ]

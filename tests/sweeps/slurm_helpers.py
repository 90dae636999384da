"""A real single-node Slurm cluster for the tests (deploy/slurm/local-cluster.sh), and
what a test reads of its jobs: squeue, and the elements' processes on this machine."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.sweeps.study_helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = ROOT / "deploy" / "slurm" / "local-cluster.sh"


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """The cluster up (installed, configured, started, its node idle) once per test
    process; it stays up, as the PostgreSQL server does. Fails, never skips, when it
    cannot be had."""
    done = subprocess.run(
        [str(CLUSTER_SCRIPT), "up"], capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        pytest.fail(
            f"no Slurm cluster: {CLUSTER_SCRIPT.relative_to(ROOT)} up exited"
            f" {done.returncode}: {(done.stderr or done.stdout).strip()[-2000:]}",
            pytrace=False,
        )


def slurm(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


def jobs_named(name: str) -> list[str]:
    """The (array) job ids squeue lists under `name`."""
    return sorted(set(slurm("squeue", "--noheader", f"--name={name}", "--format=%F").split()))


def listed(job: str) -> list[str]:
    """The elements of `job` squeue still lists (pending, running, completing)."""
    done = subprocess.run(
        ["squeue", "--noheader", f"--jobs={job}", "--array", "--format=%i"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout.split() if done.returncode == 0 else []


@dataclass(frozen=True)
class Element:
    """An element's `sweeps worker` process on this machine."""

    index: int
    pid: int
    state: str  # /proc's: R, S, T (stopped), ...
    env: dict[str, str]


def elements(job: str) -> dict[int, Element]:
    """The live worker processes of `job`, by element (the batch script execs the worker,
    so the element's process is the worker)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours to read
        env = dict(
            item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item
        )
        if env.get("SLURM_ARRAY_JOB_ID") != job or b"worker" not in cmdline:
            continue
        state = stat.rsplit(")", 1)[1].split()[0]
        index = int(env["SLURM_ARRAY_TASK_ID"])
        found[index] = Element(index, int(entry.name), state, env)
    return found


def stopped(job: str, index: int) -> Element:
    """Element `index` of `job` once its worker has stopped itself (SWEEPS_STOP_AT)."""
    wait_for(
        f"element {index} of job {job} stopped",
        lambda: (e := elements(job).get(index)) is not None and e.state == "T",
    )
    return elements(job)[index]


def job_of(name: str) -> str:
    """The one job submitted under `name`, once squeue lists it."""
    wait_for(f"a job named {name}", lambda: len(jobs_named(name)) == 1)
    return jobs_named(name)[0]


def eligible_now(element: str) -> None:
    """A requeued element waits ~2 minutes before Slurm starts it again: once it is
    pending again, start it now."""

    def slurm(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    def pending() -> bool:
        done = slurm("squeue", "--noheader", f"--jobs={element}", "--format=%T")
        return done.stdout.split() == ["PENDING"]

    def updated() -> bool:
        return slurm("scontrol", "update", f"JobId={element}", "StartTime=now").returncode == 0

    wait_for(f"{element} pending again", pending)
    wait_for(f"{element} eligible now", updated)


@dataclass
class Jobs:
    """Names of the jobs a test submits, all cancelled at teardown (a stopped element
    would hold its CPU for good)."""

    names: list[str]

    def cancel_all(self) -> None:
        for name in self.names:
            subprocess.run(["scancel", f"--name={name}"], capture_output=True, check=False)


@pytest.fixture
def slurm_jobs() -> Iterator[Jobs]:
    jobs = Jobs([])
    try:
        yield jobs
    finally:
        jobs.cancel_all()

"""A database file that can no longer be written through its memory map (SIGBUS) ends
the command with one line and exit 2 (`sweeps.cli.faults`), and a resume then heals."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.gate import SPEC as GATE_TASK
from tests.gate import Gate
from tests.sweeps.study_helpers import cli_env, load, run_cli, start_cli, wait_until_lost

pytestmark = pytest.mark.slow

HEARTBEAT_S = "1"  # a trial of the dead process is stale after 2 s


def _chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


def _require_immutable_flag(tmp_path: Path) -> None:
    """`chattr` as root on a filesystem with the immutable flag, or the test fails saying so."""
    if shutil.which("chattr") is None:
        pytest.fail("chattr is missing: apt-get install e2fsprogs", pytrace=False)
    probe = tmp_path / "probe"
    probe.touch()
    refused = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, text=True)
    if refused.returncode != 0:
        pytest.fail(f"cannot set the immutable flag here: {refused.stderr.strip()}", pytrace=False)
    _chattr("-i", probe)
    probe.unlink()


@pytest.mark.parametrize("command", [["trials"], ["best"]])
def test_reading_a_study_in_an_immutable_home_says_read_only(
    tmp_path: Path, command: list[str]
) -> None:
    """Reading a WAL database makes its -shm file beside it: an immutable home forbids it."""
    _require_immutable_flag(tmp_path)
    home = tmp_path / "h"
    done = run_cli(
        "run", "--study", "s", "--trials", "1", "--epochs", "2", "--no-track", env=cli_env(home)
    )
    assert done.returncode == 0, done.stderr
    _chattr("+i", home)
    try:
        refused = run_cli(*command, "--study", "s", env=cli_env(home))
    finally:
        _chattr("-i", home)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "sweeps.db is read-only" in lines[0], refused.stderr
    assert "damaged" not in lines[0]


def test_a_database_index_made_immutable_mid_run_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """Needs `chattr` (e2fsprogs, which `.ci/run` installs) as root on a filesystem with the
    immutable flag (ext4, xfs, btrfs): without them the test fails saying so."""
    _require_immutable_flag(tmp_path)
    home = tmp_path / "h"
    shm = home / "sweeps.db-shm"  # SQLite's WAL index, mapped into memory
    gate = Gate(tmp_path / "gate")
    env = cli_env(home, SWEEPS_HEARTBEAT_S=HEARTBEAT_S, **gate.env)
    env.pop("PYTHONFAULTHANDLER", None)
    args = ["--study", "im", "--task", GATE_TASK, "--penalties", "l2", "--pruner", "none"]
    gate.hold(1)  # build 0 is the check of the task, 1 the first trial
    proc = start_cli("run", *args, "--trials", "2", env=env)
    try:
        gate.wait_until_held()
        fd = os.open(shm, os.O_RDONLY)
        try:  # written back, so the next write into the map asks the filesystem
            os.fsync(fd)
        finally:
            os.close(fd)
        _chattr("+i", shm)
        gate.release(1)
        _, err = proc.communicate(timeout=300)
    finally:
        gate.release(1)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _chattr("-i", *home.iterdir())
    assert proc.returncode == 2, err
    [line] = err.strip().splitlines()[-1:]
    assert line.startswith("sweeps: error: a file mapped in memory failed (SIGBUS)"), err
    assert "Traceback" not in err and "Fatal Python error" not in err, err
    url = f"sqlite:///{home / 'sweeps.db'}"
    wait_until_lost(url, "im")
    resumed = run_cli("run", *args, "--trials", "1", env=env)
    assert resumed.returncode == 0, resumed.stderr
    states = [t.state for t in load("im", url).trials]
    assert TrialState.RUNNING not in states and TrialState.COMPLETE in states, states

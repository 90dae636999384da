"""The connection budget end to end (`tracking.connections`): PostgreSQL's own view of the
connections (`pg_stat_activity`, sampled while the study runs: `bench.connections`) of
real `sweeps` processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from bench.connections import Sampler
from tests.conftest import create_postgres_database, drop_postgres_database, server_url
from tests.services import started_private_postgres
from tests.sweeps.study_helpers import cli_env, load, run_cli, spent

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

BUDGET = 3  # connections of one worker with its recording process and heartbeat thread
RETRYING = "retrying for up to"  # what a process says when the server refuses it


def _check(study: str, env: dict[str, str], *args: str) -> None:
    done = run_cli("check", "--study", study, "--json", *args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["consistent"]


def test_a_tracked_batch_study_keeps_every_worker_within_three_connections(
    tmp_path: Path,
) -> None:
    """Two workers, each with its recording process writing rounds into Optuna's storage,
    the results tables and an MLflow store, all on PostgreSQL; their launcher holds no
    connection while it waits for them."""
    storage, admin = create_postgres_database()
    tracking, tracking_admin = create_postgres_database("sweeps_mlflow")
    names = [str(sa.make_url(url).database) for url in (storage, tracking)]
    env = {**cli_env(tmp_path / "h", storage), "SWEEPS_TRACKING_URI": tracking}
    try:
        with Sampler(server_url(), names) as sampler:
            done = run_cli(
                *("run", "--study", "b", "--workers", "2", "--batch", "8", "--trials", "32"),
                *("--epochs", "3", "--penalties", "l1,l2", "--pruner", "none", "--quiet"),
                env=env,
            )
        assert done.returncode == 0, done.stderr
        peaks = sampler.peaks
        workers = peaks.workers()
        assert len(workers) == 2, peaks
        assert max(workers.values()) <= BUDGET, peaks
        assert peaks.writers >= 1, peaks  # the recording processes wrote, connected
        assert set(peaks.databases) == set(names), peaks  # both stores were used
        assert peaks.unnamed == 0, peaks  # every connection says whose it is
        # The launcher holds none while it waits: a look at the progress connects for a
        # moment every half second (held throughout, the share would be 1).
        launchers = peaks.launchers()
        assert len(launchers) <= 1 and max(launchers.values(), default=0) < 0.5, peaks
        trials = load("b", storage).trials
        assert spent(trials, 32)
        assert all(t.state is TrialState.COMPLETE for t in trials)
        _check("b", env)
    finally:
        drop_postgres_database(tracking, tracking_admin)
        drop_postgres_database(storage, admin)


MAX_CONNECTIONS = 40
WORKERS = 16


def test_sixteen_workers_share_a_server_of_forty_connections(tmp_path: Path) -> None:
    """`--workers 16`, each with a recording process (two rounds each), on a server that
    admits 40 connections: nobody is refused one, and the study completes."""
    with started_private_postgres(f"max_connections={MAX_CONNECTIONS}") as server:
        storage = server.create_database("sweeps")
        env = cli_env(tmp_path / "h", storage)
        with Sampler(server.url("postgres"), ["sweeps"], interval_s=0.05) as sampler:
            done = run_cli(
                *("run", "--study", "many", "--workers", str(WORKERS), "--batch", "2"),
                *("--trials", str(4 * WORKERS), "--epochs", "2", "--penalties", "l2"),
                *("--pruner", "none", "--no-track", "--quiet"),
                env=env,
                timeout=600,
            )
        assert done.returncode == 0, done.stderr
        assert RETRYING not in done.stderr  # the workers' stderr is the launcher's
        peaks = sampler.peaks
        assert len(peaks.workers()) == WORKERS, peaks
        assert max(peaks.workers().values()) <= BUDGET - 1, peaks  # untracked: no MLflow
        assert peaks.total < MAX_CONNECTIONS, peaks  # one is the sampler's
        trials = load("many", storage).trials
        assert spent(trials, 4 * WORKERS)
        assert all(t.state is TrialState.COMPLETE for t in trials)
        _check("many", env, "--no-track")

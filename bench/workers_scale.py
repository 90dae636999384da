"""`make bench BENCH_ARGS=--workers-scale`: how a study's throughput grows with its workers
on PostgreSQL, what each worker holds there, and which store takes the time.

For 1, 2, 4 and 8 workers: `sweeps run --workers N --batch K` of a tiny task (the d2l
task for a few epochs, so that the stores, not the training, take the time), each study in
fresh databases of the server, fully tracked (MLflow's store on the same server), then the
same untracked (no MLflow). Measured:

- trials/s in the steady state: the trials told between the 10th and the 90th percentile
  of their completion times, over that time (each worker's imports and start, and the end,
  left out);
- connections, sampled from `pg_stat_activity` (`bench.connections`): the most at once in
  all, and the most one worker (with its recording process) held;
- where the time goes: the server's CPU seconds for each database (its backends'), the
  CPU seconds of the sweeps processes (launcher, workers, recording processes), and the
  mean number of connections running a statement or waiting for a row lock, per database.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import sqlalchemy as sa

from bench.connections import Sampler

WORKERS = (1, 2, 4, 8)
DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1/postgres"


@contextmanager
def _database(server: str, what: str) -> Iterator[str]:
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"sweeps_scale_{what}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _url(server: str, database: str) -> str:
    return sa.make_url(server).set(database=database).render_as_string(hide_password=False)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(server: str, workers: int, args: argparse.Namespace, *, tracked: bool) -> dict[str, Any]:
    """One study of `workers` workers, `args.per_worker` trials each."""
    trials = workers * args.per_worker
    with ExitStack() as stack:
        storage = stack.enter_context(_database(server, "storage"))
        names = [storage]
        home = Path(stack.enter_context(TemporaryDirectory(prefix="sweeps-scale-")))
        env = {**os.environ, "SWEEPS_HOME": str(home), "SWEEPS_STORAGE": _url(server, storage)}
        env.pop("SWEEPS_TRACKING_URI", None)
        if tracked:
            mlflow = stack.enter_context(_database(server, "mlflow"))
            names.append(mlflow)
            env["SWEEPS_TRACKING_URI"] = _url(server, mlflow)
        cmd = [sys.executable, "-m", "sweeps", "run", "--study", "scale"]
        cmd += ["--workers", str(workers), "--batch", str(args.batch), "--trials", str(trials)]
        cmd += ["--epochs", str(args.epochs), "--penalties", "l1,l2", "--pruner", "none"]
        cmd += ["--quiet", *([] if tracked else ["--no-track"])]
        cpu_before = _children_cpu_s()
        started = time.monotonic()
        with Sampler(server, names, interval_s=0.05) as sampler:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        wall_s = time.monotonic() - started
        if done.returncode != 0:
            sys.exit(f"bench: --workers {workers} failed:\n{done.stderr[-3000:]}")
        rate = _steady_rate(_url(server, storage))
    peaks = sampler.peaks
    role = {storage: "storage", **({names[1]: "mlflow"} if tracked else {})}
    return {
        "workers": workers,
        "tracked": tracked,
        "trials": trials,
        "trials_per_s": rate,
        "wall_s": wall_s,
        "peak_connections": peaks.total,
        "peak_per_worker": max(peaks.workers().values(), default=0),
        "sweeps_cpu_s": _children_cpu_s() - cpu_before,
        "server_cpu_s": {role[db]: s for db, s in peaks.backend_cpu_s.items()},
        "busy": {role[db]: n / max(peaks.samples, 1) for db, n in peaks.active.items()},
        "lock_waiting": {role[db]: n / max(peaks.samples, 1) for db, n in peaks.lock_waits.items()},
    }


def _steady_rate(storage_url: str) -> float:
    """Trials told between the 10th and 90th percentile of completion times, per second."""
    engine = sa.create_engine(storage_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            times = sorted(
                conn.execute(
                    sa.text("SELECT datetime_complete FROM trials WHERE state = 'COMPLETE'")
                ).scalars()
            )
    finally:
        engine.dispose()
    first, last = len(times) // 10, len(times) - 1 - len(times) // 10
    span = (times[last] - times[first]).total_seconds()
    return (last - first) / span if span > 0 else float("nan")


def _print(results: list[dict[str, Any]]) -> None:
    for tracked in (True, False):
        rows = [r for r in results if r["tracked"] is tracked]
        base = rows[0]["trials_per_s"]
        print(f"\n{'tracked (MLflow on PostgreSQL)' if tracked else 'untracked'}:")
        print(
            f"{'workers':>7} {'trials/s':>9} {'vs 1':>6} {'peak conns':>10} {'per worker':>10}"
            f" {'sweeps CPU s':>12} {'PG CPU s st/ml':>15} {'busy st/ml':>11} {'lock st':>7}"
        )
        for r in rows:
            cpu, busy = r["server_cpu_s"], r["busy"]
            print(
                f"{r['workers']:>7} {r['trials_per_s']:9.1f} {r['trials_per_s'] / base:5.2f}x"
                f" {r['peak_connections']:>10} {r['peak_per_worker']:>10}"
                f" {r['sweeps_cpu_s']:12.1f}"
                f" {cpu.get('storage', 0):7.1f}/{cpu.get('mlflow', 0):<7.1f}"
                f" {busy.get('storage', 0):5.2f}/{busy.get('mlflow', 0):<5.2f}"
                f" {r['lock_waiting'].get('storage', 0):7.2f}"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench --workers-scale")
    parser.add_argument(
        "--postgres", default=os.environ.get("SWEEPS_BENCH_POSTGRES", DEFAULT_SERVER)
    )
    parser.add_argument("--per-worker", type=int, default=64, help="Trials per worker [64].")
    parser.add_argument("--batch", type=int, default=8, help="Trials per round [8].")
    parser.add_argument("--epochs", type=int, default=5, help="Epochs per trial [5].")
    parser.add_argument("--json", dest="json_out", help="Also write the figures to this file.")
    args = parser.parse_args(argv)
    print(
        f"{os.cpu_count()} cores; d2l, {args.epochs} epochs, --batch {args.batch},"
        f" {args.per_worker} trials per worker, --pruner none"
    )
    results = []
    for tracked in (True, False):
        for workers in WORKERS:
            results.append(run(args.postgres, workers, args, tracked=tracked))
            print(f"  {workers} workers, tracked={tracked}: done", file=sys.stderr)
    _print(results)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""`make bench` / `python -m bench`: trials/s of sweeps against a plain Optuna+MLflow script.

Kinds (each measured in a fresh process, repeats alternating so drift hits all alike):
  (a) peer        Optuna on SQLite, a report per epoch, optuna-integration's MLflowCallback
  (b) sequential  `sweeps run`, fully tracked (MLflow child run with history + artifacts,
                  results row), SQLite
  (b0) unpruned   the same with --pruner none: every trial trains all its epochs, as in
                  (d), so (b0)/(d) is the cost of tracking alone (the median pruner saves
                  (b) training time that (d) spends)
  (c) batched     the same with --batch K
  (d) bare        trainer.train on the configs (b0) searched (after a (b0) run; a random mix
                  of the same space otherwise): nothing stored or logged
and a scaling line: `sweeps run --workers 1` vs `--workers 2` on PostgreSQL. `--scale` adds
the cost of 1024 trials added to a `--batch K` study (K = 512; untracked and fully tracked)
against `trainer.batched.train_batch` of the same configs; `--threads` measures torch's
CPU threads instead (bench/threads.py), `--stream` the memory of a stack trained from a
file (bench/stream.py), `--cnn` the digits CNN stacked and one at a time (bench/cnn.py),
`--workers-scale` 1 to 8 workers on PostgreSQL (bench/workers_scale.py).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SEARCHED_DIR = Path(tempfile.mkdtemp(prefix="sweeps-bench-"))
atexit.register(shutil.rmtree, SEARCHED_DIR, True)
LABELS = {
    "peer": "(a) peer: Optuna+SQLite, report/epoch, MLflowCallback",
    "sequential": "(b) sweeps run, sequential, fully tracked",
    "unpruned": "(b0) the same, --pruner none (trains every epoch, as (d))",
    "batched": "(c) sweeps run --batch K, fully tracked",
    "bare": "(d) bare training loop, untracked (b0's trials)",
}


def measure(
    kind: str, args: argparse.Namespace, *extra: str, trials: int | None = None
) -> dict[str, Any]:
    """One run of `kind` in a fresh process. The bare loop replays the trials the last
    unpruned study of that size searched, so both train the very same configs."""
    n = trials or args.trials
    cmd = [sys.executable, "-m", "bench.one", kind, "--trials", str(n)]
    cmd += ["--batch", str(args.batch), "--device", args.device, *extra]
    source = {"bare": "unpruned", "scale-bare": "scale-untracked"}.get(kind, kind)
    searched = SEARCHED_DIR / f"{source}-{n}.json"
    if kind != source and searched.exists():
        cmd += ["--configs", str(searched)]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"bench: {kind} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if kind in ("unpruned", "scale-untracked"):
        searched.write_text(json.dumps(result["searched"]))
    del result["searched"]
    return result


SCALE_KINDS = ("scale-untracked", "scale-tracked", "scale-bare")  # the bare one replays


def scale(args: argparse.Namespace) -> dict[str, float]:
    """Seconds per 1024 trials added to a `--batch K` study, (T(large) − T(small)) scaled:
    store creation, imports and the parent run's figures cancel. Against `train_batch` of
    the very configs the untracked study searched, in stacks of K (nothing stored)."""
    small, large = args.scale_trials
    scaled = argparse.Namespace(**{**vars(args), "batch": args.scale_batch})
    seconds: dict[tuple[str, int], list[float]] = {
        (k, n): [] for k in SCALE_KINDS for n in (small, large)
    }
    for r in range(args.repeats):
        for n in (small, large):
            for kind in SCALE_KINDS:
                got = measure(kind, scaled, trials=n)["seconds"]
                seconds[kind, n].append(got)
                print(f"  repeat {r + 1}: {kind} {n} trials {got:.2f} s", file=sys.stderr)
    median = {key: statistics.median(values) for key, values in seconds.items()}
    per_1024 = {
        k: (median[k, large] - median[k, small]) * 1024 / (large - small) for k in SCALE_KINDS
    }
    bare = per_1024["scale-bare"]
    print(
        f"\nscale (d2l, 100 epochs, --batch {args.scale_batch}, --pruner none, {args.device}):"
        f" per 1024 trials added between {small} and {large}"
    )
    for kind in SCALE_KINDS:
        print(
            f"  {kind:16} {per_1024[kind]:8.2f} s {1024 / per_1024[kind]:9.1f} trials/s"
            f" {per_1024[kind] / bare:6.2f}x bare"
        )
    return per_1024


def marginal_per_trial(args: argparse.Namespace, kinds: list[str]) -> dict[str, float]:
    """(T(2N) − T(N)) / N from medians of alternating runs: the stores' creation and the
    parent run's figures are paid once per study, so they cancel and what is left is what
    trials N+1…2N cost (the first N are the same trials in both runs: seeded sampling)."""
    n = args.trials
    seconds: dict[tuple[str, int], list[float]] = {(k, t): [] for k in kinds for t in (n, 2 * n)}
    for _ in range(args.repeats):
        for kind in kinds:
            for trials in (n, 2 * n):
                seconds[kind, trials].append(measure(kind, args, trials=trials)["seconds"])
    median = {key: statistics.median(values) for key, values in seconds.items()}
    return {k: (median[k, 2 * n] - median[k, n]) / n for k in kinds}


@contextmanager
def postgres_database(server: str) -> Iterator[str]:
    """A fresh database on `server` for the scaling line, dropped afterwards."""
    import sqlalchemy as sa

    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"sweeps_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--kinds", default=",".join(LABELS), help="Subset to run.")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "SWEEPS_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1/postgres"
        ),
        help="Server for the workers line; 'none' skips it.",
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="Also compare peak RSS of 100- and 500-trial batched studies (slow).",
    )
    parser.add_argument(
        "--marginal",
        action="store_true",
        help="Also time sequential and bare at twice --trials: the cost per added trial.",
    )
    parser.add_argument("--json", dest="json_out", help="Also write the figures to this file.")
    parser.add_argument(
        "--scale",
        action="store_true",
        help="Also time --batch studies at two sizes against bare train_batch (slow).",
    )
    parser.add_argument("--scale-batch", type=int, default=512, help="K for --scale [512].")
    parser.add_argument(
        "--scale-trials",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        default=(512, 1536),
        help="The two study sizes for --scale [512,1536].",
    )
    parser.add_argument(
        "--threads",
        action="store_true",
        help="Instead: torch threads 1 vs all cores, quiet and busy (bench/threads.py).",
    )
    parser.add_argument(
        "--tracking",
        action="store_true",
        help="Instead: ms per trial logged to MLflow, bulk vs client (bench/tracking.py).",
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="Instead: peak RSS of a stack trained from a file on disk (bench/stream.py).",
    )
    parser.add_argument(
        "--cnn",
        action="store_true",
        help="Instead: the digits CNN, K=64 stacked vs one at a time (bench/cnn.py).",
    )
    parser.add_argument(
        "--confirm",
        action="store_true",
        help="Instead: sweeps confirm vs bare train_batch vs one at a time (bench/confirm.py).",
    )
    parser.add_argument(
        "--workers-scale",
        action="store_true",
        help="Instead: 1, 2, 4, 8 workers on PostgreSQL: trials/s, connections, where the"
        " time goes (bench/workers_scale.py).",
    )
    args = parser.parse_args()
    if args.workers_scale:
        from bench import workers_scale

        scale_args = ["--postgres", args.postgres]
        workers_scale.main(scale_args + (["--json", args.json_out] if args.json_out else []))
        return
    if args.stream:
        from bench import stream

        stream.main([])
        return
    if args.cnn:
        from bench import cnn

        cnn.main(["--repeats", str(args.repeats), "--device", args.device])
        return
    if args.confirm:
        from bench import confirm

        confirm.main(["--repeats", str(args.repeats)])
        return
    if args.threads:
        from bench import threads

        threads.main(["--repeats", str(args.repeats)])
        return
    if args.tracking:
        from bench import tracking

        tracking.main(["--repeats", str(args.repeats)])
        return
    kinds = [k for k in args.kinds.split(",") if k]

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"{args.trials} trials of the d2l task (100 epochs), {args.repeats} alternating repeats")
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    for r in range(args.repeats):
        for kind in kinds:
            runs[kind].append(measure(kind, args))
            print(f"  repeat {r + 1}: {kind} {runs[kind][-1]['seconds']:.2f} s", file=sys.stderr)

    per_trial = {
        k: statistics.median(x["seconds"] for x in v) / args.trials for k, v in runs.items()
    }
    rss = {k: max(x["peak_rss_mb"] for x in v) for k, v in runs.items()}
    print(f"\n{'kind':58} {'ms/trial':>9} {'trials/s':>9} {'peak RSS':>9}")
    for kind in kinds:
        label = LABELS[kind].replace("K", str(args.batch))
        ms = per_trial[kind] * 1000
        print(f"{label:58} {ms:9.1f} {1000 / ms:9.1f} {rss[kind]:7.0f}MB")
    ratios = {}
    pairs = (
        ("sequential", "peer"),
        ("batched", "peer"),
        ("sequential", "bare"),
        ("unpruned", "bare"),
    )
    for num, den in pairs:
        if num in per_trial and den in per_trial:
            # trials/s ratios against the peer; time per trial ratios against the bare loop
            ratio = (
                per_trial[num] / per_trial[den]
                if den == "bare"
                else per_trial[den] / per_trial[num]
            )
            ratios[f"{num}/{den}"] = ratio
    if ratios:
        print("\nratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
        print("  (b)/(a), (c)/(a): trials/s; (b)/(d), (b0)/(d): time per trial")

    marginal = {}
    if args.marginal:
        measured = [k for k in ("sequential", "unpruned", "bare") if k in kinds]
        marginal = marginal_per_trial(args, measured)
        print(
            f"\nper added trial (trials {args.trials + 1}..{2 * args.trials}; once-per-study"
            " costs cancel): " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in marginal.items())
        )
        if "bare" in marginal:
            print(
                "  "
                + ", ".join(
                    f"{k}/bare {marginal[k] / marginal['bare']:.2f}x" for k in measured[:-1]
                )
            )

    scaling = {}
    if args.postgres != "none":
        for workers in (1, 2):
            with postgres_database(args.postgres) as url:  # a fresh study each time
                got = measure("workers", args, "--workers", str(workers), "--storage", url)
            scaling[workers] = args.trials / got["seconds"]
        print(
            f"\nscaling (PostgreSQL, sequential, tracked): --workers 1 {scaling[1]:.1f} trials/s,"
            f" --workers 2 {scaling[2]:.1f} trials/s ({scaling[2] / scaling[1]:.2f}x)"
        )
    memory = {}
    if args.memory:
        for n in (100, 500):
            memory[n] = measure("batched", args, trials=n)["peak_rss_mb"]
        print(
            f"\nmemory (batched, tracked): peak RSS {memory[100]:.0f} MB after 100 trials,"
            f" {memory[500]:.0f} MB after 500"
        )
    scaled = scale(args) if args.scale else {}
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(
                {
                    "per_trial_s": per_trial,
                    "peak_rss_mb": rss,
                    "ratios": ratios,
                    "workers_trials_per_s": scaling,
                    "memory_peak_rss_mb": memory,
                    "marginal_per_trial_s": marginal,
                    "scale_per_1024_trials_s": scaled,
                    "runs": runs,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()

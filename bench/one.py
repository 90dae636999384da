"""One measurement in a fresh process: `python -m bench.one KIND ...` prints a JSON line.

Imports happen before the clock starts (they are paid once per process, by every kind
alike); the clock covers creating the stores and running every trial.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from trainer import TrialConfig

KINDS = (
    "peer",
    "sequential",
    "unpruned",
    "batched",
    "bare",
    "workers",
    "scale-untracked",
    "scale-tracked",
    "scale-bare",
)
PENALTIES = ("none", "l2", "weight_decay")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--trials", type=int, required=True)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--storage", help="Optuna storage URL [SQLite in a temporary dir]")
    parser.add_argument(
        "--configs", help="bare: JSON file of the trials' searched params [a random mix]"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in FACTS.md: tiny models run fastest on one thread
    with tempfile.TemporaryDirectory(prefix="sweeps-bench-") as tmp:
        home = Path(tmp)
        storage = args.storage or f"sqlite:///{home / 'optuna.db'}"
        seconds = MEASURE[args.kind](args, home, storage)
        searched = _searched(storage) if args.kind in SWEEPS_KINDS else []
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak = max(usage, children) / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "searched": searched}))


def _searched(storage: str) -> list[dict[str, float | str | None]]:
    """The searched params of the study's trials, in order (for the bare loop to replay)."""
    import optuna

    study = optuna.load_study(study_name="bench", storage=storage)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    return [{k: t.params.get(k) for k in ("penalty", "lambda", "l1_ratio")} for t in trials]


def _peer(args: argparse.Namespace, home: Path, storage: str) -> float:
    import optuna
    from optuna_integration.mlflow import MLflowCallback  # noqa: F401 (import off the clock)

    from bench.peer import run_peer
    from sweeps.storage import default_tracking

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    run_peer(storage, default_tracking(home), args.trials)
    return time.perf_counter() - started


def _sweeps(args: argparse.Namespace, home: Path, storage: str) -> float:
    from sweeps.cli.process import quiet_mlflow, quiet_optuna

    # This process's settings, as the `sweeps` command makes them (MLflow's before its import).
    quiet_mlflow()
    quiet_optuna()
    import tracking.mlflow_runs  # noqa: F401 (MLflow's import off the clock, as for the peer)
    from sweeps.cli.heap import study_heap
    from sweeps.config import PrunerKind, SweepConfig
    from sweeps.runner import run_study
    from sweeps.storage import resolve_stores
    from trainer import Penalty, TrialConfig

    scale = args.kind.startswith("scale-")
    cfg = SweepConfig(
        study="bench",
        base=TrialConfig(device=args.device),
        penalties=tuple(Penalty(p) for p in PENALTIES),
        trials=args.trials,
        workers=args.workers if args.kind == "workers" else 1,
        batch=args.batch if args.kind == "batched" or scale else 1,
        # scale: every trial trains every epoch, as the bare train_batch it is compared with
        pruner=PrunerKind.NONE if args.kind == "unpruned" or scale else PrunerKind.MEDIAN,
    )
    stores = resolve_stores(str(home), storage, None)
    track = args.kind != "scale-untracked"
    started = time.perf_counter()
    with study_heap(track=track) as ready:  # as `sweeps run` runs it
        run_study(cfg, stores, quiet=True, track=track, on_ready=ready)
    return time.perf_counter() - started


def _bare(args: argparse.Namespace, home: Path, storage: str) -> float:
    """The training loop alone, nothing stored or logged: the trials a study searched
    (`--configs`; the cost of training differs by penalty) or else a seeded random mix of
    the same space."""
    from trainer import load_task, train

    configs = _configs(args)
    task = load_task(configs[0])
    with _trainer_heap():
        started = time.perf_counter()
        for cfg in configs:
            train(cfg, task)
        return time.perf_counter() - started


def _scale_bare(args: argparse.Namespace, home: Path, storage: str) -> float:
    """`trainer.batched.train_batch` alone on the same configs, in stacks of --batch."""
    from trainer import load_task
    from trainer.batched import train_batch

    configs = _configs(args)
    task = load_task(configs[0])
    device = torch.device(args.device)
    train_batch(configs[:2], task, device=device)  # first-call costs, off the clock
    with _trainer_heap():
        started = time.perf_counter()
        for i in range(0, len(configs), args.batch):
            train_batch(configs[i : i + args.batch], task, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started


@contextmanager
def _trainer_heap() -> Iterator[None]:
    """The garbage collector as a study process has it while it trains (`study_heap`:
    the imports frozen, young collections rare), so that the bare loop's figure is the
    training alone: at Python's defaults it collects many times a round, which the study
    does not pay."""
    from sweeps.cli.heap import study_heap

    with study_heap(track=False) as ready:
        ready()
        yield


def _configs(args: argparse.Namespace) -> list[TrialConfig]:
    if args.configs:
        with open(args.configs) as f:
            searched = json.load(f)[: args.trials]
    else:
        rng = random.Random(0)
        searched = []
        for _ in range(args.trials):
            penalty = rng.choice(PENALTIES)
            lam = None if penalty == "none" else 10 ** rng.uniform(-5, 2)
            searched.append({"penalty": penalty, "lambda": lam, "l1_ratio": None})
    from trainer import TrialConfig

    return [
        TrialConfig(
            penalty=p["penalty"],
            lambda_=p["lambda"] or 0.0,
            l1_ratio=p["l1_ratio"],
            device=args.device,
        )
        for p in searched
    ]


SWEEPS_KINDS = ("sequential", "unpruned", "batched", "workers", "scale-untracked", "scale-tracked")
MEASURE = {
    "peer": _peer,
    "sequential": _sweeps,
    "unpruned": _sweeps,
    "batched": _sweeps,
    "workers": _sweeps,
    "bare": _bare,
    "scale-untracked": _sweeps,
    "scale-tracked": _sweeps,
    "scale-bare": _scale_bare,
}

if __name__ == "__main__":
    main()

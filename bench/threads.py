"""Torch CPU threads per process: what the `--threads` default is chosen from.

`python -m bench --threads` (or `python -m bench.threads`) trains the same trials, each
kind in fresh processes, with 1 thread and with all cores, on a quiet machine and beside
two CPU hogs (busy loops, one per core of a 2-core machine), for the d2l task and a digits
MLP; and two processes at once (two `sweeps worker` on one machine), each with 1 thread and
each with all cores. Prints seconds per trial (medians of alternating repeats) and the
ratio of all cores to one thread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

# name → (task config, trials per measurement). Small enough that a busy run stays short.
WORKLOADS: dict[str, tuple[dict[str, object], int]] = {
    "d2l": ({"task": "d2l-synthetic", "penalty": "l2", "lambda_": 0.1}, 20),
    "digits-mlp": (
        {
            "task": "digits",
            "penalty": "l2",
            "lambda_": 1e-4,
            "optimizer": "adam",
            "lr": 1e-3,
            "epochs": 5,
            "batch_size": 32,
            "task_options": (("model", "mlp"), ("hidden", "128"), ("activation", "relu")),
        },
        10,
    ),
}


def train_trials(workload: str, threads: int) -> float:
    """Seconds per trial of `workload` in this process at `threads` (after a warm-up)."""
    import torch

    from trainer import TrialConfig, load_task, train

    torch.set_num_threads(threads)
    fields, trials = WORKLOADS[workload]
    cfg = TrialConfig(**fields)  # type: ignore[arg-type]
    task = load_task(cfg)
    train(cfg.replace(epochs=1), task)  # first-call costs off the clock
    started = time.perf_counter()
    for seed in range(trials):
        train(cfg.replace(seed=seed), task)
    return (time.perf_counter() - started) / trials


def _command(workload: str, threads: int) -> list[str]:
    return [sys.executable, "-m", "bench.threads", "--one", workload, str(threads)]


def measure(workload: str, threads: int, processes: int) -> float:
    """Seconds per trial, the mean over `processes` fresh processes started together."""
    procs = [
        subprocess.Popen(_command(workload, threads), stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        sys.exit(f"bench.threads: {workload} at {threads} threads failed")
    return statistics.mean(float(out.strip().splitlines()[-1]) for out in outs)


@contextmanager
def hogs(count: int) -> Iterator[None]:
    """`count` busy loops, one process each, for the duration of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.5)  # let them reach full speed
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", nargs=2, metavar=("WORKLOAD", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(train_trials(args.one[0], int(args.one[1])))
        return {}
    cores = len(os.sched_getaffinity(0))
    settings = [  # (label, threads, processes at once, hogs)
        ("quiet, 1 process", 1, 1, 0),
        ("quiet, 1 process", cores, 1, 0),
        (f"{cores} hogs, 1 process", 1, 1, cores),
        (f"{cores} hogs, 1 process", cores, 1, cores),
        ("quiet, 2 processes at once", 1, 2, 0),
        ("quiet, 2 processes at once", cores, 2, 0),
    ]
    seconds: dict[tuple[str, str, int], list[float]] = {}
    for _ in range(args.repeats):
        for workload in WORKLOADS:
            for label, threads, processes, hog_count in settings:
                with hogs(hog_count):
                    got = measure(workload, threads, processes)
                seconds.setdefault((workload, label, threads), []).append(got)
    print(f"seconds per trial, medians of {args.repeats} alternating repeats ({cores} cores)")
    print(f"{'workload':12} {'setting':28} {'1 thread':>10} {f'{cores} threads':>11} {'ratio':>7}")
    figures: dict[str, dict[str, float]] = {}
    for workload in WORKLOADS:
        for label in dict.fromkeys(label for label, *_ in settings):
            one = statistics.median(seconds[workload, label, 1])
            many = statistics.median(seconds[workload, label, cores])
            print(f"{workload:12} {label:28} {one:10.4f} {many:11.4f} {many / one:6.2f}x")
            figures[f"{workload}: {label}"] = {"1": one, str(cores): many}
    return figures


if __name__ == "__main__":
    main()

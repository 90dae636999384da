"""`make bench BENCH_ARGS=--cnn`: the digits CNN, K trials stacked against one at a time.

`--k` configurations of `--task digits --model cnn` (l2, λ log-spaced from 1e-5 to 1e-1;
Adam, lr 0.005, minibatch 64, `--epochs` epochs, one seed: a study's default) train
as one `train_batch` stack and, for `--sequential` of them, one `trainer.train` after
another, each on `--device`, one torch thread on CPU. Repeats alternate the two; the
best of `--repeats` is reported as trials/s, by the wall clock and by the process's CPU
time (the one thread's work: the steadier figure on a machine others share). Imports
and the data set's loading are not timed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from trainer import Penalty, TrialConfig, train
from trainer.batched import train_batch
from trainer.tasks import load_task


def _configs(k: int, epochs: int, device: str) -> list[TrialConfig]:
    return [
        TrialConfig(
            task="digits",
            task_options=(("model", "cnn"),),
            penalty=Penalty.L2,
            lambda_=10 ** (-5 + 4 * i / max(1, k - 1)),
            optimizer="adam",  # type: ignore[arg-type]
            lr=0.005,
            batch_size=64,
            epochs=epochs,
            device=device,
        )
        for i in range(k)
    ]


def _seconds(run: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of `run()`."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    device = torch.device(args.device)
    cfgs = _configs(args.k, args.epochs, args.device)
    task = load_task(cfgs[0])
    train(cfgs[0].replace(epochs=1), task, device=device)  # warm-up: first-call costs
    train_batch([c.replace(epochs=1) for c in cfgs[:2]], task, device=device)
    one: list[tuple[float, float]] = []
    stacked: list[tuple[float, float]] = []
    for _ in range(args.repeats):
        one.append(
            _seconds(lambda: [train(c, task, device=device) for c in cfgs[: args.sequential]])
        )
        stacked.append(_seconds(lambda: train_batch(cfgs, task, device=device)))
    print(
        f"digits CNN (8,16 channels), {args.epochs} epochs, minibatch 64, Adam, {args.device},"
        f" best of {args.repeats}; trials/s by wall clock | by CPU time:"
    )
    rates = []
    for label, times, n in (
        (f"one at a time ({args.sequential} trials)", one, args.sequential),
        (f"stacked, K = {args.k}", stacked, args.k),
    ):
        wall, cpu = (n / min(t[i] for t in times) for i in (0, 1))
        rates.append((wall, cpu))
        print(f"  {label:<26} {wall:8.2f} | {cpu:8.2f}")
    (one_wall, one_cpu), (k_wall, k_cpu) = rates
    print(f"  stacked / one at a time    {k_wall / one_wall:7.2f}× | {k_cpu / one_cpu:7.2f}×")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cnn", description=__doc__)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--sequential", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()

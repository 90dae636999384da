"""`make bench BENCH_ARGS=--tracking`: what logging one finished trial to MLflow costs.

Per trial, 100 epochs of the five curves and a weights file, into a fresh SQLite store:
`MlflowTracker.log_trials` of 64 trials at once (the bulk writer, one transaction) against
the same through MlflowClient, run by run (`bulk=False`, as against an MLflow server).
Medians of alternating repeats, printed side by side.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tracking.records import TrialRecord, TrialState
from trainer.metrics import METRICS


def _record(study: str, number: int, weights: bytes, epochs: int = 100) -> TrialRecord:
    history = {m: [1.0 / (e + 1 + i) for e in range(epochs)] for i, m in enumerate(METRICS)}
    return TrialRecord(
        study=study,
        number=number,
        state=TrialState.COMPLETE,
        params={"penalty": "l2", "lambda": 3.0 + number, "epochs": epochs, "seed": 0},
        final={m: values[-1] for m, values in history.items()},
        value=history["val_loss"][-1],
        duration_s=0.1,
        device="cpu",
        start_time_ms=1_700_000_000_000,
        end_time_ms=1_700_000_000_700,
        history=history,
        weights=weights,
    )


def _weights() -> bytes:
    buffer = io.BytesIO()
    torch.save({"weight": torch.randn(1, 200), "bias": torch.zeros(1)}, buffer)
    return buffer.getvalue()


def measure(trials: int, repeats: int) -> dict[str, float]:
    """ms per trial: bulk (`log_trials`) and one by one (`log_run` through the client)."""
    from tracking.mlflow_runs import MlflowTracker

    weights = _weights()
    per_trial: dict[str, list[float]] = {"bulk": [], "client": []}
    with tempfile.TemporaryDirectory(prefix="sweeps-bench-tracking-") as tmp:
        for r in range(repeats):
            for kind in ("bulk", "client"):
                root = Path(tmp) / f"{kind}-{r}"
                root.mkdir()
                tracker = MlflowTracker(
                    f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", bulk=kind == "bulk"
                )
                experiment = tracker.ensure_experiment("bench")
                parent = tracker.create_parent_run(experiment, "bench")
                recs = [_record("bench", n, weights) for n in range(trials)]
                started = time.perf_counter()
                tracker.log_trials(parent, recs)
                per_trial[kind].append((time.perf_counter() - started) * 1000 / trials)
    return {kind: statistics.median(values) for kind, values in per_trial.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench --tracking")
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    got = measure(args.trials, args.repeats)
    print(
        f"MLflow logging, {args.trials} trials x 100 epochs + weights, SQLite store:"
        f" bulk writer {got['bulk']:.2f} ms/trial, MlflowClient {got['client']:.1f}"
        f" ms/trial ({got['client'] / got['bulk']:.1f}x)"
    )


if __name__ == "__main__":
    main()

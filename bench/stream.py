"""`make bench BENCH_ARGS=--stream`: a stack trained from a file on disk, with flat memory.

A binary file of `--rows` rows (float32: `--features` features, then the target; a
linear regression's data, written in blocks) is the training set of a task whose splits
are `DatasetSplit`s over `FileRows`, a map-style Dataset that reads the rows a minibatch
asks for with `os.pread` (no memory map: its pages would count as the process's). A
stack of `--k` configurations (l2, λ log-spaced; the linear model's hand-written path,
or `--model mlp`) trains on it for `--epochs` epochs. Each run is a fresh process that
reports its peak RSS (`resource.getrusage`) before and after training; `--mode memory`
loads the same file as tensors instead, for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

BLOCK_ROWS = 10_000
VAL_ROWS = 2_000  # the file's last rows are the validation split (and the test split)


def write_file(path: Path, rows: int, features: int, seed: int = 0) -> None:
    """y = X·w + 0.1·ε, X ~ N(0, 1), w ~ N(0, 1/features): block by block."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, features**-0.5, features).astype(np.float32)
    with path.open("wb") as f:
        for start in range(0, rows, BLOCK_ROWS):
            n = min(BLOCK_ROWS, rows - start)
            X = rng.standard_normal((n, features), dtype=np.float32)
            y = X @ w + 0.1 * rng.standard_normal(n, dtype=np.float32)
            f.write(np.concatenate([X, y[:, None]], axis=1).astype(np.float32).tobytes())


class FileRows(Dataset[Any]):
    """Rows `first … first + count − 1` of such a file, read on demand. `__getitems__`
    reads a minibatch (one `pread` for a run of consecutive rows, else one per row) and
    returns it as (X, y): use it with `DatasetSplit(..., collate=False)`."""

    def __init__(self, path: Path, features: int, first: int, count: int) -> None:
        self.path, self.features, self.first, self.count = path, features, first, count
        self.row_bytes = 4 * (features + 1)
        self._fd: int | None = None

    def __len__(self) -> int:
        return self.count

    def _file(self) -> int:
        if self._fd is None:  # opened lazily: each DataLoader worker opens its own
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def __getitem__(self, i: int) -> Any:
        return self.__getitems__([i])

    def __getitems__(self, rows: list[int]) -> Any:
        fd, size = self._file(), self.row_bytes
        start = self.first + rows[0]
        if rows == list(range(rows[0], rows[0] + len(rows))):
            data = os.pread(fd, size * len(rows), start * size)
        else:
            data = b"".join(os.pread(fd, size, (self.first + r) * size) for r in rows)
        table = torch.frombuffer(bytearray(data), dtype=torch.float32)
        table = table.view(len(rows), self.features + 1)
        return table[:, :-1], table[:, -1:]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None}


def _task(args: argparse.Namespace) -> Any:
    from trainer.models import ModelSpec, make_model_factory
    from trainer.tasks import DatasetSplit, Split, Task, squared_loss

    path, features = Path(args.file), args.features
    n_train = args.rows - VAL_ROWS
    spec = ModelSpec("mlp", (16,), "relu") if args.model == "mlp" else ModelSpec()
    make_model = make_model_factory(spec, features, 1)
    train: Split | DatasetSplit
    val: Split | DatasetSplit
    if args.mode == "memory":
        table = torch.from_numpy(np.fromfile(path, dtype=np.float32)).view(-1, features + 1)
        train = Split(table[:n_train, :-1], table[:n_train, -1:])
        val = Split(table[n_train:, :-1], table[n_train:, -1:])
    else:
        rows = FileRows(path, features, 0, n_train)
        train = DatasetSplit(rows, workers=args.workers, collate=False)
        val = DatasetSplit(FileRows(path, features, n_train, VAL_ROWS), collate=False)
    return Task("file", train, val, val, make_model=make_model, loss=squared_loss)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One run in this process: peak RSS before and after training the stack."""
    from trainer import Penalty, TrialConfig
    from trainer.batched import train_batch

    torch.set_num_threads(1)
    task = _task(args)
    cfgs = [
        TrialConfig(
            task="file",
            penalty=Penalty.L2,
            lambda_=10 ** (-4 + 4 * i / max(1, args.k - 1)),
            lr=0.01,
            batch_size=args.batch,
            epochs=args.epochs,
        )
        for i in range(args.k)
    ]
    before = _peak_mb()
    started = time.perf_counter()
    results = train_batch(cfgs, task, device=torch.device("cpu"))
    seconds = time.perf_counter() - started
    return {
        "mode": args.mode,
        "rows": args.rows,
        "file_mb": os.path.getsize(args.file) / 2**20,
        "peak_before_mb": before,
        "peak_mb": _peak_mb(),
        "seconds": seconds,
        "val_loss": [r.final["val_loss"] for r in results[:: max(1, args.k // 4)]],
    }


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="sweeps-bench-stream-") as home:
        for rows in args.sizes:
            path = Path(home) / f"rows-{rows}.bin"
            write_file(path, rows, args.features)
            for mode in args.modes:
                cmd = [sys.executable, "-m", "bench.stream", "--one", "--mode", mode]
                cmd += ["--file", str(path), "--rows", str(rows)]
                cmd += ["--features", str(args.features), "--k", str(args.k)]
                cmd += ["--epochs", str(args.epochs), "--batch", str(args.batch)]
                cmd += ["--workers", str(args.workers), "--model", args.model]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(
                    f"{r['rows']:>9,} rows {r['file_mb']:7.1f} MB  {r['mode']:<6}  peak RSS"
                    f" {r['peak_before_mb']:6.0f} MB before training, {r['peak_mb']:6.0f} MB"
                    f" after ({r['peak_mb'] - r['peak_before_mb']:+.0f} MB)  {r['seconds']:6.1f} s"
                    f"  val_loss {', '.join(f'{v:.4g}' for v in r['val_loss'])}",
                    flush=True,
                )
            path.unlink()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stream", description=__doc__)
    parser.add_argument("--sizes", type=lambda t: [int(n) for n in t.split(",")], default=[200_000])
    parser.add_argument("--modes", type=lambda t: t.split(","), default=["stream", "memory"])
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--model", choices=("linear", "mlp"), default="linear")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="stream", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args)))
    else:
        run(args)


if __name__ == "__main__":
    main()

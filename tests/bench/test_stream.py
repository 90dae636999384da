"""bench/stream.py's file-backed Dataset: a stack trained from the file equals the same
stack on the file's rows loaded as tensors (bit-equal), read in-process or by a
DataLoader worker."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.stream import VAL_ROWS, FileRows, _task, write_file
from trainer import TrialConfig
from trainer.batched import train_batch
from trainer.tasks import DatasetSplit

FEATURES = 6
ROWS = VAL_ROWS + 300


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stream") / "rows.bin"
    write_file(path, ROWS, FEATURES)
    return path


def test_file_rows_read_what_the_file_holds(data_file: Path) -> None:
    table = np.fromfile(data_file, dtype=np.float32).reshape(ROWS, FEATURES + 1)
    rows = FileRows(data_file, FEATURES, 10, 50)
    assert len(rows) == 50
    for wanted in ([3, 4, 5, 6], [7, 0, 49, 7]):  # one read of a run; one per row
        X, y = rows.__getitems__(wanted)
        assert torch.equal(X, torch.from_numpy(table[[10 + i for i in wanted], :FEATURES]))
        assert torch.equal(y[:, 0], torch.from_numpy(table[[10 + i for i in wanted], FEATURES]))


@pytest.mark.parametrize("workers", [0, 1])
def test_a_stack_from_the_file_equals_the_stack_from_its_tensors(
    data_file: Path, workers: int
) -> None:
    args = argparse.Namespace(
        file=str(data_file), features=FEATURES, rows=ROWS, model="mlp", workers=workers
    )
    streamed, in_memory = (
        _task(argparse.Namespace(**vars(args), mode="stream")),
        _task(argparse.Namespace(**vars(args), mode="memory")),
    )
    assert isinstance(streamed.train, DatasetSplit) and streamed.train.workers == workers
    cfgs = [
        TrialConfig(
            task="file",
            penalty="l2",
            lambda_=lam,
            lr=0.05,
            batch_size=32,
            epochs=2,
            seed=s,
            data_seed=0,
        )
        for s, lam in ((0, 0.0), (1, 0.01), (0, 0.1))
    ]
    cpu = torch.device("cpu")
    for a, b in zip(
        train_batch(cfgs, streamed, device=cpu),
        train_batch(cfgs, in_memory, device=cpu),
        strict=True,
    ):
        assert a.history == b.history
        assert all(torch.equal(a.state_dict[k], v) for k, v in b.state_dict.items())

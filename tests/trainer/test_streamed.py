"""Streamed splits (a Dataset, read minibatch by minibatch) give what the tensors they wrap
give: bit-equal, in `train` and in a stack, whatever reads them (the trainer's DataLoader,
DataLoader workers, the task's own loader factory, a batch-reading `__getitems__`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from trainer import TaskError, TrialConfig, TrialResult, train
from trainer.batched import train_batch
from trainer.tasks import DatasetSplit, Split, Task, load_task

CPU = torch.device("cpu")
DIGITS_MLP = (("model", "mlp"), ("hidden", "16"), ("dropout", 0.2))


class Rows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Rows of tensors, counting what it serves; `batched` reads a minibatch at once."""

    def __init__(self, split: Split, batched: bool = False) -> None:
        self.X, self.y = split.X, split.y
        self.largest = 0
        if batched:
            self.__getitems__ = self._rows  # type: ignore[method-assign]

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.largest = max(self.largest, 1)
        return self.X[i], self.y[i]

    def _rows(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        self.largest = max(self.largest, len(rows))
        index = torch.tensor(rows)
        return self.X[index], self.y[index]


def _streamed(task: Task, plain: bool = False, workers: int = 0, **options: Any) -> Task:
    """The task with its splits read through Datasets of the same tensors (the training
    split by `workers` DataLoader workers)."""

    def wrap(split: object, workers: int = 0) -> DatasetSplit:
        assert isinstance(split, Split)
        if plain:
            return DatasetSplit(TensorDataset(split.X, split.y))
        batched = not options.get("collate", True)
        return DatasetSplit(Rows(split, batched), workers=workers, **options)

    val = wrap(task.val)
    test = val if task.test is task.val else wrap(task.test)
    return dataclasses.replace(task, train=wrap(task.train, workers), val=val, test=test)


def assert_identical(a: TrialResult, b: TrialResult) -> None:
    assert (a.status, a.epochs_run, a.diverged_epoch) == (b.status, b.epochs_run, b.diverged_epoch)
    assert a.history == b.history
    assert a.accuracy == b.accuracy
    assert list(a.state_dict) == list(b.state_dict)
    for name, tensor in a.state_dict.items():
        assert torch.equal(tensor, b.state_dict[name]), name


def _configs(base: TrialConfig) -> list[TrialConfig]:
    """Members of two seeds (two shuffle orders read in one pass), several penalties."""
    return [
        base.replace(penalty="none"),
        base.replace(penalty="l2", lambda_=0.5, seed=1, data_seed=base.seed),
        base.replace(penalty="elastic_net", lambda_=0.1, l1_ratio=0.3),
        base.replace(penalty="weight_decay", lambda_=0.2, seed=1, data_seed=base.seed),
    ]


@pytest.fixture(scope="module")
def d2l() -> Task:
    return load_task(TrialConfig())


@pytest.fixture(scope="module")
def digits() -> Task:
    return load_task(TrialConfig(task="digits", task_options=DIGITS_MLP))


@pytest.mark.parametrize("batch_size", [5, 3, 0])
def test_a_tensor_dataset_equals_the_tensors_on_d2l(d2l: Task, batch_size: int) -> None:
    cfgs = _configs(TrialConfig(batch_size=batch_size, epochs=15, data_seed=0))
    streamed = _streamed(d2l, plain=True)
    assert isinstance(streamed.train, DatasetSplit) and streamed.test is streamed.val
    for cfg in cfgs[:2]:
        assert_identical(train(cfg, d2l, device=CPU), train(cfg, streamed, device=CPU))
    for a, b in zip(
        train_batch(cfgs, d2l, device=CPU), train_batch(cfgs, streamed, device=CPU), strict=True
    ):
        assert_identical(a, b)


@pytest.mark.parametrize(
    "reading",
    [{}, {"collate": False}, {"workers": 1}],
    ids=["rows", "getitems", "workers"],
)
def test_a_dataset_equals_the_tensors_on_digits(digits: Task, reading: dict[str, Any]) -> None:
    """An MLP with dropout (the vmap path) on a classification task: histories, weights
    and accuracy bit-equal, sequential and stacked."""
    base = TrialConfig(task="digits", task_options=DIGITS_MLP, lr=0.05, batch_size=100, epochs=2)
    cfgs = _configs(base)
    streamed = _streamed(digits, **reading)
    assert_identical(train(cfgs[1], digits, device=CPU), train(cfgs[1], streamed, device=CPU))
    for a, b in zip(
        train_batch(cfgs, digits, device=CPU),
        train_batch(cfgs, streamed, device=CPU),
        strict=True,
    ):
        assert_identical(a, b)


def test_a_loader_factory_reads_in_the_trainers_order(d2l: Task) -> None:
    made: list[Sampler[list[int]]] = []

    def loader(batches: Sampler[list[int]]) -> DataLoader[Any]:
        made.append(batches)
        return DataLoader(TensorDataset(d2l.train.X, d2l.train.y), batch_sampler=batches)

    split = DatasetSplit(TensorDataset(d2l.train.X, d2l.train.y), loader=loader)
    task = dataclasses.replace(d2l, train=split)
    cfgs = _configs(TrialConfig(epochs=10, data_seed=0))
    for a, b in zip(
        train_batch(cfgs, d2l, device=CPU), train_batch(cfgs, task, device=CPU), strict=True
    ):
        assert_identical(a, b)
    assert len(made) == 1  # once per split and run; iterated once a pass


def test_evaluation_reads_chunks_and_agrees_with_the_whole_split(digits: Task) -> None:
    """No chunk is larger than `chunk_rows`, and the chunked means are the whole split's
    (summed in another order: within float32 rounding)."""
    assert isinstance(digits.test, Split) and isinstance(digits.train, Split)
    test_rows = Rows(digits.test, batched=True)
    train_rows = Rows(digits.train, batched=True)
    task = dataclasses.replace(
        digits,
        train=DatasetSplit(train_rows, chunk_rows=50, collate=False),
        test=DatasetSplit(test_rows, chunk_rows=64, collate=False),
    )
    cfg = TrialConfig(task="digits", task_options=DIGITS_MLP, lr=0.05, batch_size=40, epochs=2)
    whole, chunked = train(cfg, digits, device=CPU), train(cfg, task, device=CPU)
    assert test_rows.largest == 64 and train_rows.largest == 50
    for name, values in whole.history.items():
        torch.testing.assert_close(chunked.history[name], values, rtol=1e-6, atol=1e-7)
    assert chunked.accuracy == pytest.approx(whole.accuracy, abs=1e-6)
    stacked = train_batch([cfg, cfg.replace(seed=3, data_seed=0)], task, device=CPU)[0]
    for name, values in whole.history.items():
        torch.testing.assert_close(stacked.history[name], values, rtol=1e-5, atol=1e-6)


def test_members_of_several_streamed_datasets_each_train_on_their_own(d2l: Task) -> None:
    """Fresh data per seed (a confirmation): each dataset's members are a stack of their
    own, and each member is `train` on its own data."""
    other = load_task(TrialConfig(data_seed=1))
    tasks = {(0, None): _streamed(d2l, plain=True), (1, None): _streamed(other, plain=True)}
    cfgs = [
        TrialConfig(penalty=p, lambda_=1.0, seed=s, data_seed=s, epochs=10)
        for s in (0, 1)
        for p in ("l2", "l1")
    ]
    seen: list[list[int]] = []

    def record(epoch: int, members: list[int], metrics: torch.Tensor) -> None:
        seen.append(members)

    results = train_batch(cfgs, tasks, record, device=CPU, every=5)
    assert seen == [[0, 1], [0, 1], [2, 3], [2, 3]]  # the batch's own member indices
    for cfg, result in zip(cfgs, results, strict=True):
        assert_identical(train(cfg, tasks[cfg.data_key], device=CPU), result)


class Pairs(Dataset[Any]):
    def __init__(self, item: object) -> None:
        self.item = item

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> object:
        return self.item


USER_TASK = """
import torch
from torch.utils.data import TensorDataset
from trainer.models import ModelSpec, make_model_factory
from trainer.tasks import Task, squared_loss


def build(data_seed):
    gen = torch.Generator().manual_seed(data_seed)
    X = torch.randn(60, 3, generator=gen)
    y = X @ torch.tensor([[1.0], [2.0], [-1.0]])
    splits = [TensorDataset(X[i : i + 20], y[i : i + 20]) for i in (0, 20, 40)]
    return Task("mine", *splits, make_model=make_model_factory(ModelSpec(), 3, 1),
                loss=squared_loss)


def a_list(data_seed):
    task = build(data_seed)
    rows = list(task.train.dataset)
    return Task("bad", rows, task.val, task.test, make_model=task.make_model, loss=task.loss)
"""


def test_a_python_task_may_return_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "streamed_task_mod.py").write_text(USER_TASK)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = TrialConfig(task="python:streamed_task_mod:build", batch_size=0, lr=0.1, epochs=200)
    task = load_task(cfg)
    assert all(isinstance(s, DatasetSplit) for s in (task.train, task.val, task.test))
    result = train(cfg.replace(device="cpu"))
    assert result.final["val_loss"] is not None and result.final["val_loss"] < 1e-3
    with pytest.raises(TaskError, match="train is list, not a Split, DatasetSplit or Dataset"):
        load_task(cfg.replace(task="python:streamed_task_mod:a_list"))


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("text", r"reading train's first rows raised .*batch must be \(X, y\) tensors"),
        (torch.zeros(3), r"batch must be \(X, y\) tensors, got Tensor"),
        ((torch.zeros(3), torch.zeros(1)), "classification task's train.y must hold class"),
    ],
)
def test_the_task_contract_reads_a_datasets_first_rows(
    d2l: Task, item: object, fragment: str
) -> None:
    from trainer.tasks.python_task import check_task

    task = dataclasses.replace(d2l, train=DatasetSplit(Pairs(item)), classification=True)
    with pytest.raises(TaskError, match=fragment):
        check_task(task, "python:mine:build")


def test_a_dataset_split_needs_a_map_style_dataset() -> None:
    with pytest.raises(TaskError, match="map-style Dataset"):
        DatasetSplit(iter([]))  # type: ignore[arg-type]
    with pytest.raises(TaskError, match="chunk_rows >= 1"):
        DatasetSplit(TensorDataset(torch.zeros(2)), chunk_rows=0)

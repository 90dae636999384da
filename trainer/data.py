"""Reading a task's splits: minibatches in the trainer's order, evaluation in chunks.

One reader per split and training run. An in-memory `Split` lives on the training device
and is indexed there; its evaluation is one chunk, the whole split. A `DatasetSplit`
is read through a DataLoader whose batch sampler the trainer drives: a pass of
minibatches follows the given order (the trial's shuffle stream, so common random
numbers hold whatever the loader's workers do), an evaluation pass reads chunks of
`chunk_rows` rows in index order. Nothing holds more than one minibatch or chunk.

`orders` is [S, n]: S shuffle orders (one per distinct seed of a stack) read as one
pass, step t reading the t-th minibatch of every order as one batch of S·B rows. With
S = 1 it is the sequential trainer's pass.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Sampler

from trainer.errors import TaskError
from trainer.tasks.base import DatasetSplit, Split, Task, TaskSplit

Batch = tuple[torch.Tensor, torch.Tensor]


class Rows(Protocol):
    """What the trainers read a split through."""

    def __len__(self) -> int: ...

    def minibatches(self, orders: torch.Tensor, size: int) -> Iterator[Batch]:
        """Step by step, the rows orders[:, t·size : (t+1)·size], flattened (seed-major)."""
        ...

    def chunks(self, rows: int | None = None) -> Iterator[Batch]:
        """Every row once, in index order: in chunks of at most `rows` rows, or the
        split's own (an in-memory split: one chunk; a streamed one: its `chunk_rows`)."""
        ...


class InMemory:
    """A `Split` on the device: one chunk, and minibatches indexed on the device."""

    def __init__(self, split: Split, device: torch.device) -> None:
        self.split = split.to(device)
        self.device = device

    def __len__(self) -> int:
        return len(self.split)

    def minibatches(self, orders: torch.Tensor, size: int) -> Iterator[Batch]:
        X, y = self.split.X, self.split.y
        order = orders.to(self.device)
        flat = order[0] if order.shape[0] == 1 else None
        for start in range(0, order.shape[1], size):
            idx = flat[start : start + size] if flat is not None else order[:, start : start + size]
            if flat is None:
                idx = idx.reshape(-1)
            yield X[idx], y[idx]

    def chunks(self, rows: int | None = None) -> Iterator[Batch]:
        X, y = self.split.X, self.split.y
        if rows is None or rows >= len(X):
            yield X, y
            return
        for start in range(0, len(X), rows):
            yield X[start : start + rows], y[start : start + rows]


class _Passes(Sampler[list[int]]):
    """The batch sampler of one streamed split: the lists of row indices of the pass set
    last (`set`), re-iterable so one DataLoader (and its workers) serves every pass."""

    def __init__(self) -> None:
        self.orders = torch.zeros(1, 0, dtype=torch.long)
        self.size = 1

    def set(self, orders: torch.Tensor, size: int) -> None:
        self.orders, self.size = orders, size

    def __iter__(self) -> Iterator[list[int]]:
        orders, size = self.orders, self.size
        for start in range(0, orders.shape[1], size):
            rows: list[int] = orders[:, start : start + size].reshape(-1).tolist()
            yield rows

    def __len__(self) -> int:
        return -(-self.orders.shape[1] // self.size)


def _batch_as_is(batch: Any) -> Any:
    return batch


class Streamed:
    """A `DatasetSplit` read through a DataLoader (or its own `loader`), batch by batch."""

    def __init__(self, split: DatasetSplit, device: torch.device) -> None:
        self.split = split
        self.n = len(split)
        self.device = device
        self.passes = _Passes()
        self._loader: Iterable[Any] | None = None

    def __len__(self) -> int:
        return self.n

    def _batches(self) -> Iterable[Any]:
        if self._loader is None:
            split = self.split
            if split.loader is not None:
                self._loader = split.loader(self.passes)
            else:
                self._loader = DataLoader(
                    split.dataset,
                    batch_sampler=self.passes,
                    num_workers=split.workers,
                    persistent_workers=split.workers > 0,
                    collate_fn=None if split.collate else _batch_as_is,
                )
        return self._loader

    def _read(self, orders: torch.Tensor, size: int) -> Iterator[Batch]:
        self.passes.set(orders, size)
        for batch in self._batches():
            X, y = _pair(batch)
            yield X.to(self.device), y.to(self.device)

    def minibatches(self, orders: torch.Tensor, size: int) -> Iterator[Batch]:
        return self._read(orders.cpu(), size)

    def chunks(self, rows: int | None = None) -> Iterator[Batch]:
        size = self.split.chunk_rows if rows is None else min(rows, self.split.chunk_rows)
        return self._read(torch.arange(self.n).unsqueeze(0), size)


def _pair(batch: Any) -> Batch:
    if (
        not isinstance(batch, tuple | list)
        or len(batch) != 2
        or not all(isinstance(t, torch.Tensor) for t in batch)
    ):
        raise TaskError(
            f"a streamed split's batch must be (X, y) tensors, got {type(batch).__name__}"
        )
    return batch[0], batch[1]


def reader(split: TaskSplit, device: torch.device) -> Rows:
    return InMemory(split, device) if isinstance(split, Split) else Streamed(split, device)


def readers(task: Task, device: torch.device) -> tuple[Rows, Rows, Rows]:
    """The train, validation and test readers (the test reader is the validation one when
    the task's validation split is its test split, as in d2l)."""
    train, val = reader(task.train, device), reader(task.val, device)
    test = val if task.test is task.val else reader(task.test, device)
    return train, val, test


def streamed(task: Task) -> bool:
    return not all(isinstance(s, Split) for s in (task.train, task.val, task.test))


def chunked_mean(
    chunks: Iterable[Batch],
    values: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    dim: int | None = None,
) -> torch.Tensor:
    """The mean of `values(X, y)` over all chunks: over every element (`dim` None) or
    along `dim` (one mean per row of [K, m] values). A single chunk is reduced as
    `values(...).mean(dim)`, exactly what the whole in-memory split gives; several are
    summed and divided by their count."""
    it = iter(chunks)
    first = values(*next(it))
    second = next(it, None)
    if second is None:
        return first.mean() if dim is None else first.mean(dim)
    total, count = _sum(first, dim), _count(first, dim)
    for X, y in itertools.chain([second], it):
        part = values(X, y)
        total, count = total + _sum(part, dim), count + _count(part, dim)
    return total / count


def _sum(t: torch.Tensor, dim: int | None) -> torch.Tensor:
    return t.sum() if dim is None else t.sum(dim)


def _count(t: torch.Tensor, dim: int | None) -> int:
    return t.numel() if dim is None else int(t.shape[dim])


def first_rows(rows: Rows, count: int = 2) -> Batch:
    """The first `count` rows (fewer when there are fewer), read as one whole pass."""
    order = torch.arange(min(count, len(rows))).unsqueeze(0)
    (batch,) = rows.minibatches(order, count)  # the pass's one batch, the pass finished
    return batch


def head(split: TaskSplit, rows: int = 2) -> Batch:
    """The split's first `rows` rows (fewer when it is shorter), on the CPU."""
    if isinstance(split, Split):
        return split.X[:rows], split.y[:rows]
    if split.loader is None:  # no worker processes for two rows
        split = dataclasses.replace(split, workers=0)
    return first_rows(Streamed(split, torch.device("cpu")), rows)


def shapes(task: Task) -> tuple[object, ...]:
    """What members of several datasets must share to stack: the in-memory splits' shapes
    (streamed splits: their length; such members train in stacks of one dataset each)."""
    return tuple(
        (tuple(s.X.shape), tuple(s.y.shape)) if isinstance(s, Split) else ("streamed", len(s))
        for s in (task.train, task.val, task.test)
    )

"""What a task is: data splits, a model factory and a per-sample loss."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset, Sampler

from trainer.config import OptionSpec, TaskOption
from trainer.errors import TaskError

PerSampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Split:
    X: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def to(self, device: torch.device) -> Split:
        return Split(self.X.to(device), self.y.to(device))


# A pass's minibatches, as lists of row indices in order → the (X, y) of each, in order.
LoaderFactory = Callable[[Sampler[list[int]]], Iterable[tuple[torch.Tensor, torch.Tensor]]]

EVAL_CHUNK_ROWS = 4096  # rows per evaluation chunk of a streamed split


@dataclass(frozen=True)
class DatasetSplit:
    """A split read from a map-style Dataset, minibatch by minibatch, never held whole.

    `dataset[i]` is one row's `(x, y)` (a `__getitems__(indices)` returning the rows, or
    a collated `(X, y)` with `collate=False`, reads a minibatch at once). The trainer
    chooses the rows: minibatches in the trial's shuffle order, and evaluation chunks of
    `chunk_rows` rows in index order. `workers` > 0 reads them in DataLoader worker
    processes (the order stays the trainer's). `loader`, when given, replaces the
    trainer's DataLoader: it is called once per split and training run with the batch
    sampler (one list of row indices per minibatch, re-iterable, its order set before
    each pass) and returns an iterable of `(X, y)` batches in that order, iterated once a
    pass, e.g. `lambda batches: DataLoader(ds, batch_sampler=batches, num_workers=2,
    persistent_workers=True)`.
    """

    dataset: Dataset[Any]
    workers: int = 0
    loader: LoaderFactory | None = None
    chunk_rows: int = EVAL_CHUNK_ROWS
    collate: bool = True  # False: `__getitems__` already returns the batch's (X, y)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if not hasattr(self.dataset, "__len__") or not hasattr(self.dataset, "__getitem__"):
            raise TaskError(
                f"a DatasetSplit needs a map-style Dataset (len() and [i]), got"
                f" {type(self.dataset).__name__}"
            )
        if self.workers < 0 or self.chunk_rows < 1:
            raise TaskError(
                f"DatasetSplit: workers must be >= 0 and chunk_rows >= 1, got"
                f" {self.workers} and {self.chunk_rows}"
            )


TaskSplit = Split | DatasetSplit


@dataclass(frozen=True)
class Task:
    """A dataset and model family: the contract every task, built-in or user's, fulfils.

    A split is in memory (`Split`) or streamed (`DatasetSplit`; a bare map-style Dataset
    is wrapped in one). `make_model(generator)` must draw its initialization from the
    generator only. `loss`
    returns one loss per sample (no reduction); the trainer takes the mean. `val_is_test`
    says the objective uses the test split (only d2l, as the book does). `classification`
    says outputs are class scores and `y` holds class indices (int64): the trainer then
    also reports accuracy on every split at the end.
    """

    name: str
    train: TaskSplit
    val: TaskSplit
    test: TaskSplit
    make_model: Callable[[torch.Generator], nn.Module]  # initializes from the given stream
    loss: PerSampleLoss  # returns one loss per sample, no reduction
    val_is_test: bool = False
    classification: bool = False

    def __post_init__(self) -> None:
        for which in ("train", "val", "test"):
            split = getattr(self, which)
            if isinstance(split, Dataset) and not isinstance(split, DatasetSplit):
                object.__setattr__(self, which, DatasetSplit(split))


def squared_loss(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d2l's squared_loss: (ŷ − y)² / 2 per sample."""
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


def cross_entropy_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per sample; `y` holds class indices."""
    return F.cross_entropy(logits, y.reshape(-1), reduction="none")


def _convert(name: str, kind: type, value: TaskOption) -> TaskOption:
    # bool("false") is True, so booleans accept only booleans (TOML and the CLI give those).
    if kind is bool and not isinstance(value, bool):
        raise TaskError(f"task option {name} must be true or false, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise TaskError(f"task option {name} must be a string, got {value!r}")
    if kind in (int, float) and isinstance(value, bool):
        raise TaskError(f"task option {name} must be a number, got {value!r}")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise TaskError(f"task option {name} must be a whole number, got {value!r}")
    try:
        converted: TaskOption = kind(value)
    except (TypeError, ValueError):
        raise TaskError(f"task option {name} must be {kind.__name__}, got {value!r}") from None
    return converted


def resolve_options(
    task: str, specs: Mapping[str, OptionSpec], given: Mapping[str, TaskOption]
) -> dict[str, TaskOption]:
    """Defaults overlaid by `given`, type-checked; unknown names are an error."""
    unknown = sorted(set(given) - set(specs))
    if unknown:
        known = ", ".join(sorted(specs)) or "none"
        raise TaskError(f"task {task!r} has no option {unknown[0]!r} (options: {known})")
    out: dict[str, TaskOption] = {}
    for name, spec in specs.items():
        value = _convert(name, spec.kind, given.get(name, spec.default))
        if isinstance(value, float) and not math.isfinite(value):
            raise TaskError(f"task option {name} must be a finite number, got {value}")
        if spec.minimum is not None and not isinstance(value, str) and value < spec.minimum:
            raise TaskError(f"task option {name} must be >= {spec.minimum}, got {value}")
        if spec.maximum is not None and not isinstance(value, str) and value >= spec.maximum:
            raise TaskError(f"task option {name} must be < {spec.maximum}, got {value}")
        if spec.choices is not None and value not in spec.choices:
            choices = ", ".join(spec.choices)
            raise TaskError(f"task option {name} must be one of: {choices}; got {value!r}")
        out[name] = value
    return out

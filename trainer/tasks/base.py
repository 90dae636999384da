"""What a task is: data splits, a model factory and a per-sample loss."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

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


@dataclass(frozen=True)
class Task:
    """A dataset and model family: the contract every task, built-in or user's, fulfils.

    `make_model(generator)` must draw its initialization from the generator only. `loss`
    returns one loss per sample (no reduction); the trainer takes the mean. `val_is_test`
    says the objective uses the test split (only d2l, as the book does). `classification`
    says outputs are class scores and `y` holds class indices (int64): the trainer then
    also reports accuracy on every split at the end.
    """

    name: str
    train: Split
    val: Split
    test: Split
    make_model: Callable[[torch.Generator], nn.Module]  # initializes from the given stream
    loss: PerSampleLoss  # returns one loss per sample, no reduction
    val_is_test: bool = False
    classification: bool = False


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

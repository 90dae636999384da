"""What a task is: data splits, a model factory and a per-sample loss."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from trainer.config import TaskOption
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
    """A dataset and model family. `val_is_test` says the objective uses the test split."""

    name: str
    train: Split
    val: Split
    test: Split
    make_model: Callable[[torch.Generator], nn.Module]  # initializes from the given stream
    loss: PerSampleLoss  # returns one loss per sample, no reduction
    val_is_test: bool = False


def squared_loss(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d2l's squared_loss: (ŷ − y)² / 2 per sample."""
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


@dataclass(frozen=True)
class OptionSpec:
    kind: type
    default: TaskOption
    minimum: float | None = None
    help: str = ""


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
        value = given.get(name, spec.default)
        try:
            value = spec.kind(value)
        except (TypeError, ValueError):
            raise TaskError(
                f"task option {name} must be {spec.kind.__name__}, got {value!r}"
            ) from None
        if spec.minimum is not None and value < spec.minimum:
            raise TaskError(f"task option {name} must be >= {spec.minimum}, got {value}")
        out[name] = value
    return out

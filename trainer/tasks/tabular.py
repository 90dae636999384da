"""Shared by the tabular tasks (diabetes, digits, csv): splitting, standardizing, models.

Splits are a random permutation drawn from `torch.Generator().manual_seed(SPLIT_SEED)`,
the same for every trial and every `--seed`, so trials differ only in what is searched and
in their init/shuffle streams. A config's `split_seed` (what `sweeps confirm` sets on fresh
data) draws another permutation, from that seed's own "split" stream. Features are
standardized with the training split's mean and standard deviation only (a constant
column keeps scale 1), so no statistic of the validation or test rows leaks into
training. Targets are left as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from trainer.config import TaskOption
from trainer.errors import TaskError
from trainer.models import Image, make_model_factory, model_spec
from trainer.seeding import stream_generator
from trainer.tasks.base import (
    Split,
    Task,
    cross_entropy_loss,
    squared_loss,
)

SPLIT_SEED = 0


@dataclass(frozen=True)
class Table:
    """Features [n, d] (float32) and targets: [n, 1] float32, or [n] int64 class indices."""

    X: torch.Tensor
    y: torch.Tensor

    def rows(self, index: torch.Tensor) -> Split:
        return Split(self.X[index], self.y[index])


def split_rows(
    n: int, fractions: tuple[float, ...], split_seed: int | None = None
) -> list[torch.Tensor]:
    """Row indices for the first split (the rest) and one split per fraction, in order.

    Each fraction's part is round(fraction·n) rows; all parts must be non-empty. The
    permutation is the fixed one (SPLIT_SEED), or `split_seed`'s when given.
    """
    gen = (
        torch.Generator().manual_seed(SPLIT_SEED)
        if split_seed is None
        else stream_generator(split_seed, "split")
    )
    order = torch.randperm(n, generator=gen)
    sizes = [round(f * n) for f in fractions]
    first = n - sum(sizes)
    if first < 1 or min(sizes, default=1) < 1:
        raise TaskError(
            f"cannot split {n} rows into training and {len(fractions)} more non-empty"
            f" parts of fractions {', '.join(f'{f:g}' for f in fractions)}"
        )
    parts, start = [order[:first]], first
    for size in sizes:
        parts.append(order[start : start + size])
        start += size
    return parts


def standardize(train: Split, *others: Split) -> list[Split]:
    """Scale features by the training split's statistics; returns train, *others."""
    mean = train.X.mean(0)
    std = train.X.std(0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return [Split((s.X - mean) / std, s.y) for s in (train, *others)]


def tabular_task(
    name: str,
    splits: tuple[Split, Split, Split],
    *,
    classification: bool,
    n_classes: int,
    options: Mapping[str, TaskOption],
    given: Mapping[str, TaskOption],
    standardized: bool = True,
    image: Image | None = None,
) -> Task:
    """A Task over train/val/test splits with the model the options ask for; `image` is
    the (channels, height, width) of rows that are images (`--model cnn`)."""
    train, val, test = standardize(*splits) if standardized else splits
    spec = model_spec(options, given)
    outputs = n_classes if classification else 1
    return Task(
        name=name,
        train=train,
        val=val,
        test=test,
        make_model=make_model_factory(spec, int(train.X.shape[1]), outputs, image),
        loss=cross_entropy_loss if classification else squared_loss,
        classification=classification,
    )

"""A trial's checkpoints: its validation loss reported to Optuna every few epochs, and the
pruner asked whether to stop it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import optuna

from sweeps.pruning import Report, Reports


@dataclass
class Checkpoints:
    """Reports the validation loss to Optuna every `every` epochs and asks about pruning.

    Each report ends up as a storage row (`sweeps.pruning.Reports`), so reporting every
    epoch would cost more than training a small model; the last epoch is not reported
    (nothing left to prune). A batched round adds a checkpoint's reports of all its trials
    at once (`report`), then asks (`decide`).
    """

    trial: optuna.Trial
    every: int
    epochs: int
    # The pruner, asked through a `PruningView` so that a checkpoint reads no trials.
    should_prune: Callable[[optuna.Trial], bool]
    reports: Reports
    pruned_at: int | None = None

    def due(self, epoch: int) -> bool:
        return not (epoch % self.every or epoch >= self.epochs)

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        """One trial's checkpoint: report, then whether to stop."""
        if not self.due(epoch):
            return False
        self.reports.add([self.report(epoch, metrics["val_loss"])])
        return self.decide(epoch)

    def report(self, epoch: int, val_loss: float) -> Report:
        return (self.trial, epoch, val_loss)

    def decide(self, epoch: int) -> bool:
        """Asks the pruner, once this epoch's report is added."""
        if self.should_prune(self.trial):
            self.pruned_at = epoch
            return True
        return False

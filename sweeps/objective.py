"""What every trial shares, whichever way it trains (`sweeps.rounds`): pruning
checkpoints, its end state, the record kept on the Optuna trial for repair.

Failure semantics (documented in the README):
  - a training error → FAIL with the error message; the study goes on;
  - divergence (non-finite loss) → PRUNED, tagged `diverged`, so TPE learns to avoid the
    region (it ignores FAIL trials but ranks pruned ones as worst);
  - pruning → PRUNED with the history so far;
  - Ctrl-C → FAIL ("interrupted"), recorded, then the interrupt propagates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import optuna

from sweeps.reports import Report, Reports
from tracking.records import TrialRecord, TrialState
from trainer import TrainStatus, TrialConfig, TrialResult


@dataclass
class Checkpoints:
    """Reports the validation loss to Optuna every `every` epochs and asks about pruning.

    Each report ends up as a storage row (`sweeps.reports`), so reporting every epoch would
    cost more than training the d2l model; the last epoch is not reported (nothing left to
    prune). A batched round adds a checkpoint's reports of all its trials at once
    (`report`), then asks (`decide`).
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


def repeat_configs(cfg: TrialConfig, repeats: int) -> list[TrialConfig]:
    """Seeds seed … seed+R−1 for init and shuffling, all on the same data."""
    if repeats == 1 and cfg.effective_data_seed == cfg.seed:
        return [cfg]  # already the one repeat
    return [cfg.replace(seed=cfg.seed + r, data_seed=cfg.seed) for r in range(repeats)]


def conclude(results: list[TrialResult], pruned_at: int | None) -> tuple[TrialState, str | None]:
    """A trial's state from its repeats (the last one ran, the first to stop ends it)."""
    last = results[-1]
    if last.status is TrainStatus.DIVERGED:
        return TrialState.PRUNED, f"diverged at epoch {last.diverged_epoch}"
    if last.status is TrainStatus.STOPPED:
        return TrialState.PRUNED, f"pruned at epoch {pruned_at}"
    return TrialState.COMPLETE, None


RECORD_ATTR = "sweeps.record"  # the Optuna trial's user attribute holding repair_info


def keep(trial: optuna.Trial, rec: TrialRecord) -> TrialRecord:
    """Keep the recorded trial on the Optuna trial too, so `sweeps check --repair` can
    rebuild a lost results row or MLflow run from it."""
    trial.set_user_attr(RECORD_ATTR, repair_info(rec))
    return rec


def repair_info(rec: TrialRecord) -> dict[str, object]:
    return {
        "state": rec.state.value,
        "params": rec.params,
        "final": rec.final,
        "value": rec.value,
        "duration_s": rec.duration_s,
        "device": rec.device,
        "start_time_ms": rec.start_time_ms,
        "end_time_ms": rec.end_time_ms,
        "error": rec.error,
        "mlflow_run_id": rec.mlflow_run_id,
    }

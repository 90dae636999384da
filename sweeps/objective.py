"""One trial: suggest → train (R repeats) → record once in tracking → value for Optuna.

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
import torch

from sweeps.config import SweepConfig
from sweeps.pruning import PruningView
from sweeps.space import suggest
from sweeps.trial_record import build_record, now_ms
from tracking.records import TrialRecord, TrialState
from trainer import Task, TrainStatus, TrialConfig, TrialResult, train


class TrialFailed(Exception):
    """Training raised; the trial is FAIL and the study continues."""


Record = Callable[[TrialRecord], TrialRecord]


@dataclass
class Checkpoints:
    """Reports the validation loss to Optuna every `every` epochs and asks about pruning.

    Each report is a storage write (~1 ms), so reporting every epoch would cost more than
    training the d2l model; the last epoch is not reported (nothing left to prune).
    """

    trial: optuna.Trial
    every: int
    epochs: int
    # The pruner, asked through a `PruningView` so that a checkpoint reads no trials.
    should_prune: Callable[[optuna.Trial], bool]
    pruned_at: int | None = None

    def due(self, epoch: int) -> bool:
        return not (epoch % self.every or epoch >= self.epochs)

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        if not self.due(epoch):
            return False
        self.trial.report(metrics["val_loss"], epoch)
        if self.should_prune(self.trial):
            self.pruned_at = epoch
            return True
        return False


@dataclass
class Objective:
    """Callable for `study.optimize`; `record` writes the finished trial to tracking."""

    sweep: SweepConfig
    task: Task
    device: torch.device
    device_label: str
    record: Record

    def __call__(self, trial: optuna.Trial) -> float:
        cfg = suggest(trial, self.sweep).replace(device=self.device_label)
        started = now_ms()
        every = self.sweep.checkpoint_every
        checkpoints = Checkpoints(trial, every, cfg.epochs, PruningView(trial.study))
        results: list[TrialResult] = []
        try:
            for r, member in enumerate(repeat_configs(cfg, self.sweep.repeats)):
                hook = checkpoints if r == 0 else None  # prune on the first seed's curve
                result = train(member, self.task, on_epoch=hook, device=self.device)
                results.append(result)
                if result.status is not TrainStatus.COMPLETED:
                    break
        except KeyboardInterrupt:
            self._finish(trial, cfg, results, TrialState.FAIL, started, "interrupted")
            raise
        except Exception as e:  # recorded as FAIL, then Optuna is told via TrialFailed
            message = f"{type(e).__name__}: {e}"
            self._finish(trial, cfg, results, TrialState.FAIL, started, message)
            raise TrialFailed(message) from e

        state, error = conclude(results, checkpoints.pruned_at)
        rec = self._finish(trial, cfg, results, state, started, error)
        if state is TrialState.PRUNED:
            raise optuna.TrialPruned(error)
        assert rec.value is not None
        return rec.value

    def _finish(
        self,
        trial: optuna.Trial,
        cfg: TrialConfig,
        results: list[TrialResult],
        state: TrialState,
        started_ms: int,
        error: str | None,
    ) -> TrialRecord:
        rec = build_record(self.sweep.study, trial.number, cfg, results, state, started_ms, error)
        return keep(trial, self.record(rec))


def repeat_configs(cfg: TrialConfig, repeats: int) -> list[TrialConfig]:
    """Seeds seed … seed+R−1 for init and shuffling, all on the same data."""
    return [cfg.replace(seed=cfg.seed + r, data_seed=cfg.seed) for r in range(repeats)]


def conclude(results: list[TrialResult], pruned_at: int | None) -> tuple[TrialState, str | None]:
    """A trial's state from its repeats (the last one ran, the first to stop ends it)."""
    last = results[-1]
    if last.status is TrainStatus.DIVERGED:
        return TrialState.PRUNED, f"diverged at epoch {last.diverged_epoch}"
    if last.status is TrainStatus.STOPPED:
        return TrialState.PRUNED, f"pruned at epoch {pruned_at}"
    return TrialState.COMPLETE, None


def keep(trial: optuna.Trial, rec: TrialRecord) -> TrialRecord:
    """Keep the recorded trial on the Optuna trial too, so `sweeps check --repair` can
    rebuild a lost results row or MLflow run from it."""
    trial.set_user_attr("sweeps.record", repair_info(rec))
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

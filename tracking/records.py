"""What the sweep hands to tracking: plain records, no torch and no Optuna objects.

The same field names are used in MLflow (params, metrics, tags), the results tables, JSON
output and CSV headers.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from trainer.metrics import ACCURACY_METRICS, METRICS

# The trainer's per-epoch metrics, and its final-only ones of classification tasks (absent
# from a record's `final` for every other task).
FINAL_METRICS = METRICS + ACCURACY_METRICS
# One finished trial as a flat row, in this order: `sweeps trials`, `sweeps export`, the
# parent run's trials.csv.
TRIAL_COLUMNS = (
    "number",
    "state",
    "penalty",
    "lambda",
    "l1_ratio",
    "lr",  # the trial's learning rate: searched (`--lr-min/--lr-max`) or the study's `--lr`
    "value",
    *FINAL_METRICS,
    "duration_s",
    "device",
    "mlflow_run_id",
    "error",  # why a trial is not COMPLETE: `pruned at epoch k`, `diverged at epoch k`, ...
    "reused_from",  # the earlier trial of the same configuration whose result it took
)
# The best trial of a (study, penalty): `sweeps best`, `sweeps compare`, a run's summary.
BEST_COLUMNS = (
    "study",
    "penalty",
    "lambda",
    "l1_ratio",
    "lr",
    "value",
    "train_loss",
    "val_loss",
    "test_loss",
    "w_norm",
    "val_accuracy",
    "test_accuracy",
    "trial_number",
    "mlflow_run_id",
)

# A penalty's trials by how they ended, beside its best trial in `sweeps best`, `compare`
# and a run's summary. Disjoint: a trial that took an earlier trial's result is COMPLETE
# but counted as reused, not complete.
COUNT_COLUMNS = ("complete", "pruned", "failed", "reused")


def now_ms() -> int:
    """Epoch milliseconds: the unit of a record's times, as MLflow keeps them."""
    return int(time.time() * 1000)


class TrialState(StrEnum):
    """Optuna's trial states under their user-facing names."""

    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAIL = "FAIL"
    RUNNING = "RUNNING"
    WAITING = "WAITING"


class History(StrEnum):
    """Which epochs of a trial's curves become MLflow metric rows (`--history`)."""

    EPOCHS = "epochs"  # every epoch
    CHECKPOINTS = "checkpoints"  # every pruning checkpoint and the last epoch
    FINAL = "final"  # the last epoch only
    AUTO = "auto"  # CHECKPOINTS, or FINAL in rounds of LARGE_ROUND trials or more


# A round of this many trials or more is logged for scale: its trials' files go to one
# archive on the parent run (`MlflowTracker.log_trials`), and `--history auto` keeps only
# their final values as metric rows. Per trial, five filesystem entries and ~60 metric
# rows cost more to write than training it in such a stack; the best trials still get
# their files and whole curves when the study ends.
LARGE_ROUND = 64


@dataclass(frozen=True)
class HistoryPolicy:
    """`kind`, with `every` epochs between checkpoints. Whatever it thins, the whole
    per-epoch history is kept as the run's `history.csv` artifact, and the study's best
    trials get their full curves as metrics when the study ends (`sweeps.recording`)."""

    kind: History = History.EPOCHS  # never AUTO: see `resolve`
    every: int = 1

    @classmethod
    def resolve(cls, kind: History, every: int, batch: int) -> HistoryPolicy:
        """The policy `kind` means for rounds of `batch` trials (AUTO decided here)."""
        if kind is History.AUTO:
            kind = History.FINAL if batch >= LARGE_ROUND else History.CHECKPOINTS
        return cls(kind, every)

    def logs(self, epoch: int, epochs: int) -> bool:
        """Whether epoch `epoch` (from 1) of a trial that ran `epochs` becomes metric rows."""
        if self.kind is History.EPOCHS or epoch == epochs:
            return True
        return self.kind is History.CHECKPOINTS and epoch % self.every == 0

    def steps(self, epochs: int) -> tuple[int, ...]:
        """The epochs (from 1) of a trial that ran `epochs` that become metric rows."""
        return _steps(self, epochs)


@functools.lru_cache(maxsize=256)  # every trial of a study asks for the same few
def _steps(policy: HistoryPolicy, epochs: int) -> tuple[int, ...]:
    return tuple(e for e in range(1, epochs + 1) if policy.logs(e, epochs))


EVERY_EPOCH = HistoryPolicy()

# The MLflow run status each finished trial state ends in.
RUN_STATUS = {
    TrialState.COMPLETE: "FINISHED",
    TrialState.PRUNED: "KILLED",
    TrialState.FAIL: "FAILED",
}


@dataclass(frozen=True)
class StudyRecord:
    """One study. `config` is the SweepConfig as JSON-able values, secrets already masked."""

    name: str
    task: str
    config: dict[str, Any]
    mlflow_experiment_id: str | None = None
    mlflow_parent_run_id: str | None = None


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial: its config, final metrics, per-epoch history and weights.

    `params` is `TrialConfig.as_params()`: task, penalty, lambda, l1_ratio, penalize,
    optimizer, lr, batch_size, epochs, seed, data_seed, device, task.* options.
    `final` maps each name in METRICS to its last value (None when no epoch finished), and
    for a classification task each name in ACCURACY_METRICS to the trained model's accuracy.
    `history` maps each name in METRICS to one value per epoch (step = epoch, from 1);
    empty where nothing keeps it (an untracked study: only MLflow keeps histories).
    `weights` is a state_dict serialized with torch.save (None when there is none).
    Times are epoch milliseconds, as MLflow wants them.
    """

    study: str
    number: int
    state: TrialState
    params: dict[str, Any]
    final: dict[str, float | None]
    value: float | None
    duration_s: float
    device: str
    start_time_ms: int
    end_time_ms: int
    history: dict[str, list[float]] = field(default_factory=dict)
    weights: bytes | None = None
    error: str | None = None
    mlflow_run_id: str | None = None
    reused_from: int | None = None  # the trial whose result this one took, not trained

    @property
    def penalty(self) -> str:
        return str(self.params["penalty"])

    @property
    def lambda_(self) -> float:
        return float(self.params["lambda"])

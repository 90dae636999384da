"""What a training run returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch

from trainer.config import TrialConfig
from trainer.metrics import ACCURACY_METRICS, METRICS


class TrainStatus(StrEnum):
    COMPLETED = "completed"
    DIVERGED = "diverged"  # a loss or ‖w‖ became non-finite; training stopped at that epoch
    STOPPED = "stopped"  # the epoch callback asked to stop (e.g. the sweep pruned it)


@dataclass
class TrialResult:
    config: TrialConfig
    status: TrainStatus
    device: str
    duration_s: float
    history: dict[str, list[float]] = field(default_factory=dict)  # metric -> value per epoch
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    diverged_epoch: int | None = None
    val_is_test: bool = False
    accuracy: dict[str, float] = field(default_factory=dict)  # ACCURACY_METRICS at the end

    @property
    def epochs_run(self) -> int:
        return len(self.history.get("train_loss", []))

    @property
    def final(self) -> dict[str, float | None]:
        """Each metric at the last recorded epoch (None when no epoch finished)."""
        return {m: (self.history[m][-1] if self.history.get(m) else None) for m in METRICS}

    def summary(self) -> dict[str, Any]:
        """The config and final metrics under user-facing names (`sweeps train --json`)."""
        params = self.config.as_params()
        params["device"] = self.device
        return {
            **params,
            **self.final,
            **{m: self.accuracy.get(m) for m in ACCURACY_METRICS},
            "status": self.status.value,
            "epochs_run": self.epochs_run,
            "diverged_epoch": self.diverged_epoch,
            "val_is_test": self.val_is_test,
            "duration_s": self.duration_s,
        }

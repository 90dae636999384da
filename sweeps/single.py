"""One training run outside a study (`sweeps train`), tracked in MLflow by default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainer import TrialConfig

if TYPE_CHECKING:
    from sweeps.storage import Stores
    from trainer import TrialResult

# Runs of `sweeps train` share one MLflow experiment, apart from the studies' experiments.
TRAIN_EXPERIMENT = "sweeps-train"


@dataclass(frozen=True)
class SingleOutcome:
    summary: dict[str, Any]
    stores: Stores | None = None  # where it was tracked


def run_single(
    cfg: TrialConfig,
    *,
    track: bool,
    home: str,
    storage: str | None,
    tracking_uri: str | None,
) -> SingleOutcome:
    """Validate everything (device, task, scope, store URLs) before any work, train, track."""
    from sweeps.storage import resolve_stores
    from trainer import check_config, resolve_device, train

    device = resolve_device(cfg.device)
    task = check_config(cfg)
    stores = resolve_stores(home, storage, tracking_uri) if track else None
    if stores is not None:
        stores.check_files(write=True, storage=False)
    from tracking.records import now_ms

    started = now_ms()
    result = train(cfg, task, device=device)
    summary = result.summary()
    summary["mlflow_run_id"] = None
    if stores is not None:
        summary["mlflow_run_id"] = _track(stores, result, started)
    return SingleOutcome(summary, stores)


def _track(stores: Stores, result: TrialResult, started_ms: int) -> str:
    from sweeps.lifecycle import build_record
    from sweeps.recording import make_tracker
    from tracking.records import TrialState
    from trainer import TrainStatus

    state = TrialState.COMPLETE if result.status is TrainStatus.COMPLETED else TrialState.FAIL
    error = f"diverged at epoch {result.diverged_epoch}" if result.diverged_epoch else None
    rec = build_record(TRAIN_EXPERIMENT, 0, result.config, [result], state, started_ms, error)
    tracker = make_tracker(stores)
    return tracker.log_run(tracker.ensure_experiment(TRAIN_EXPERIMENT), rec)

"""One training run outside any study (`sweeps train`, `sweeps.train`): validated before
any work, trained, and tracked in MLflow's `sweeps-train` experiment unless not asked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sweeps.config import TRAIN_EXPERIMENT
from sweeps.recording import make_tracker
from sweeps.records import build_record, conclude
from sweeps.storage import Stores, resolve_stores
from tracking import records
from trainer import TrialConfig, TrialResult, check_config, resolve_device, train


@dataclass(frozen=True)
class SingleOutcome:
    summary: dict[str, Any]
    stores: Stores | None = None  # where it was tracked
    result: TrialResult | None = None  # the history and weights


def run_single(
    cfg: TrialConfig,
    *,
    track: bool,
    home: str,
    storage: str | None,
    tracking_uri: str | None,
) -> SingleOutcome:
    """Validate everything (device, task, scope, store URLs) before any work, train, track."""
    device = resolve_device(cfg.device)
    task = check_config(cfg)
    stores = resolve_stores(home, storage, tracking_uri) if track else None
    if stores is not None:
        stores.check_files(write=True, storage=False)
    started = records.now_ms()
    result = train(cfg, task, device=device)
    summary = result.summary()
    summary["mlflow_run_id"] = None
    if stores is not None:
        summary["mlflow_run_id"] = _track(stores, result, started)
    return SingleOutcome(summary, stores, result)


def _track(stores: Stores, result: TrialResult, started_ms: int) -> str:
    state, error = conclude([result], pruned_at=None)  # the study's rule: diverged is PRUNED
    rec = build_record(TRAIN_EXPERIMENT, 0, result.config, [result], state, started_ms, error)
    tracker = make_tracker(stores)
    try:
        return tracker.log_run(tracker.ensure_experiment(TRAIN_EXPERIMENT), rec)
    finally:
        tracker.close()

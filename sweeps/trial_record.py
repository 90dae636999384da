"""Turning TrainResults into the TrialRecord that tracking stores (no Optuna here)."""

from __future__ import annotations

import io
import time
from collections.abc import Mapping

import torch

from tracking.records import METRICS, TrialRecord, TrialState
from trainer import TrialConfig, TrialResult


def build_record(
    study: str,
    number: int,
    cfg: TrialConfig,
    results: list[TrialResult],
    state: TrialState,
    started_ms: int,
    error: str | None,
    *,
    weights: bool = True,
) -> TrialRecord:
    """Average repeats epoch by epoch; weights (serialized only when asked: only MLflow
    keeps them) and device come from the first repeat."""
    history = _mean_history(results)
    final: dict[str, float | None] = {
        m: (history[m][-1] if history.get(m) else None) for m in METRICS
    }
    final.update(_mean_accuracy(results))
    first = results[0] if results else None
    return TrialRecord(
        study=study,
        number=number,
        state=state,
        params=cfg.as_params(),
        final=final,
        value=final["val_loss"] if state is TrialState.COMPLETE else None,
        duration_s=sum(r.duration_s for r in results),
        device=first.device if first else cfg.device,
        start_time_ms=started_ms,
        end_time_ms=now_ms(),
        history=history,
        weights=(
            serialize_weights(first.state_dict) if weights and first and first.state_dict else None
        ),
        error=error,
    )


def _mean_history(results: list[TrialResult]) -> dict[str, list[float]]:
    if not results:
        return {m: [] for m in METRICS}
    epochs = min(r.epochs_run for r in results)
    if len(results) == 1:  # the default (one repeat): the mean is the history itself
        return {m: results[0].history[m][:epochs] for m in METRICS}
    n = len(results)
    return {
        m: [
            sum(values) / n
            for values in zip(*(r.history[m][:epochs] for r in results), strict=True)
        ]
        for m in METRICS
    }


def _mean_accuracy(results: list[TrialResult]) -> dict[str, float]:
    """Classification tasks' final accuracies, averaged over repeats that have them.

    They ride in `final` beside METRICS: tracking stores METRICS per epoch and columns for
    them only, so these extra keys reach the Optuna trial's record (`sweeps check`) and
    whoever reads `final`, without changing the results schema.
    """
    scored = [r.accuracy for r in results if r.accuracy]
    if not scored:
        return {}
    return {k: sum(a[k] for a in scored) / len(scored) for k in scored[0]}


def serialize_weights(state_dict: Mapping[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(dict(state_dict), buffer)
    return buffer.getvalue()


def now_ms() -> int:
    return int(time.time() * 1000)

"""The one TrialRecord factory of the MLflow tests (no tests here)."""

from __future__ import annotations

from typing import Any

from tracking.records import TrialRecord, TrialState
from trainer.metrics import METRICS

START_MS = 1_700_000_000_000


def history(epochs: int, offset: float = 0.0) -> dict[str, list[float]]:
    """Distinct, decreasing curves: metric k of trial `offset` at epoch e is offset+k+1/(e+1)."""
    return {
        name: [offset + k + 1.0 / (epoch + 1) for epoch in range(epochs)]
        for k, name in enumerate(METRICS)
    }


def trial_record(
    study: str,
    number: int,
    *,
    epochs: int,
    state: TrialState = TrialState.COMPLETE,
    history_: dict[str, list[float]] | None = None,
    final: dict[str, float | None] | None = None,
    value: float | None = 0.25,
    params: dict[str, Any] | None = None,
    weights: bytes | None = None,
    error: str | None = None,
    duration_s: float = 0.5,
    span_ms: int = 500,
) -> TrialRecord:
    """A finished trial starting `number` seconds after START_MS and lasting `span_ms`.

    `params` are laid over a d2l l2 trial's; `final` defaults to the history's last values.
    """
    hist = history(epochs, offset=number) if history_ is None else history_
    base = {"task": "d2l-synthetic", "penalty": "l2", "lambda": 3.0, "l1_ratio": None}
    base |= {"lr": 0.003, "epochs": epochs, "seed": 0}
    return TrialRecord(
        study=study,
        number=number,
        state=state,
        params=base | (params or {}),
        final=final if final is not None else {k: v[-1] if v else None for k, v in hist.items()},
        value=value,
        duration_s=duration_s,
        device="cpu",
        start_time_ms=START_MS + number * 1000,
        end_time_ms=START_MS + number * 1000 + span_ms,
        history=hist,
        weights=weights,
        error=error,
    )

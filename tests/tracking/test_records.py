"""tracking.records mirrors trainer.result's metric names (tracking may not import torch)."""

from __future__ import annotations

from tracking import records
from trainer import result


def test_metric_names_match_the_trainer() -> None:
    assert records.METRICS == result.METRICS
    assert records.ACCURACY_METRICS == result.ACCURACY_METRICS
    assert set(records.FINAL_METRICS) <= set(records.TRIAL_COLUMNS)

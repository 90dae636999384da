"""The rows MLflow's SQL store holds for one finished run, built without MLflow's ORM.

`bulk` inserts them; they are what `SqlAlchemyStore.create_run`, `log_batch` and
`set_terminated` would leave in the runs, tags, params, metrics and latest_metrics tables
for the same run (tests/tracking/test_mlflow_sql.py compares the two through MlflowClient).
MLflow's own validators check them, so what MLflow refuses is refused here too.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from mlflow.entities import Param
from mlflow.utils.validation import _validate_metric, _validate_param

from tracking.mlflow_specs import MetricPoint, RunSpec
from tracking.mlflow_tags import (
    RUN_NAME_TAG,
    USER_TAG,
)
from tracking.records import now_ms

# What MlflowClient.create_run stores for a run created without these tags.
DEFAULT_USER = "unknown"
# SQL has no inf: SqlAlchemyStore.sanitize_metric_value stores ±inf as ±max double.
MAX_DOUBLE = 1.7976931348623157e308
# Rows go to the DBAPI's executemany as tuples in these column orders, which spares
# SQLAlchemy's per-row bind processing of Core inserts.
COLUMNS = {
    "runs": (
        "run_uuid",
        "name",
        "source_type",
        "source_name",
        "entry_point_name",
        "user_id",
        "status",
        "start_time",
        "end_time",
        "deleted_time",
        "source_version",
        "lifecycle_stage",
        "artifact_uri",
        "experiment_id",
    ),
    "tags": ("key", "value", "run_uuid"),
    "params": ("key", "value", "run_uuid"),
    "metrics": ("key", "value", "timestamp", "step", "is_nan", "run_uuid"),
    "latest_metrics": ("key", "value", "timestamp", "step", "is_nan", "run_uuid"),
}

Row = tuple[Any, ...]


def run_rows(
    run_id: str, experiment_id: int, artifact_uri: str, spec: RunSpec
) -> dict[str, list[Row]]:
    """Table name -> the run's rows in COLUMNS order, after log_batch's checks."""
    params = _checked_params(spec.params)
    _check_metrics(spec.metrics)
    tags = dict(spec.tags)
    tags.setdefault(RUN_NAME_TAG, spec.run_name)
    metrics, latest = _metric_rows(run_id, spec.metrics)
    return {
        "runs": [_run_row(run_id, experiment_id, artifact_uri, spec, tags)],
        "tags": [(key, value, run_id) for key, value in tags.items()],
        "params": [(p.key, p.value, run_id) for p in params],
        "metrics": metrics,
        "latest_metrics": latest,
    }


def _run_row(
    run_id: str, experiment_id: int, artifact_uri: str, spec: RunSpec, tags: Mapping[str, str]
) -> Row:
    """The runs row create_run writes, as set_terminated leaves it."""
    # MlflowClient.create_run and set_terminated read a 0 time as "now".
    now = now_ms()
    values = {
        "run_uuid": run_id,
        "name": spec.run_name,
        "source_type": "UNKNOWN",
        "source_name": "",
        "entry_point_name": "",
        "user_id": tags.get(USER_TAG, DEFAULT_USER),
        "status": spec.status,
        "start_time": spec.start_time_ms or now,
        "end_time": spec.end_time_ms or now,
        "deleted_time": None,
        "source_version": "",
        "lifecycle_stage": "active",
        "artifact_uri": artifact_uri,
        "experiment_id": experiment_id,
    }
    return tuple(values[column] for column in COLUMNS["runs"])


def _metric_rows(run_id: str, points: Sequence[MetricPoint]) -> tuple[list[Row], list[Row]]:
    """The metrics rows (a repeated point kept once, as MLflow does) and, per key, the
    latest_metrics row: the largest (step, timestamp, stored value), the first on ties."""
    rows: dict[Row, None] = {}  # an ordered set: the rows are the metric_pk
    latest: dict[str, Row] = {}
    for key, raw, timestamp, step in points:
        value = float(raw)
        if math.isfinite(value):
            row: Row = (key, value, timestamp, step, False, run_id)
        else:
            is_nan, value = _sanitize(value)
            row = (key, value, timestamp, step, is_nan, run_id)
        if row in rows:
            continue
        rows[row] = None
        best = latest.get(key)
        if best is None or (step, timestamp, row[1]) > (best[3], best[2], best[1]):
            latest[key] = row
    return list(rows), list(latest.values())


def _checked_params(params: Sequence[Param]) -> list[Param]:
    # What log_batch checks (and, with MLFLOW_TRUNCATE_LONG_VALUES, truncates).
    return [_checked_param(p.key, p.value, i) for i, p in enumerate(params)]


@functools.lru_cache(maxsize=4096)  # most params (task, lr, epochs, ...) repeat every trial
def _checked_param(key: str, value: str, index: int) -> Param:
    checked: Param = _validate_param(key, value, path=f"params[{index}]")  # type: ignore[no-untyped-call]
    return checked


def _check_metrics(points: Sequence[MetricPoint]) -> None:
    """log_batch's checks. MLflow validates the name anew for every point; the types are
    fixed by MetricPoint, so one point per key is checked, once per process for a key seen
    valid before, and every point only for a negative timestamp, which MLflow refuses."""
    first: dict[str, MetricPoint] = {}
    for point in points:
        first.setdefault(point[0], point)
    if all(p[2] >= 0 for p in points):
        checked = [p for key, p in first.items() if key not in _VALID_KEYS]
    else:
        checked = list(points)
    for key, value, timestamp, step in checked:
        _validate_metric(key, value, timestamp, step)  # type: ignore[no-untyped-call]
        _VALID_KEYS.add(key)


_VALID_KEYS: set[str] = set()  # metric names that passed MLflow's checks


def _sanitize(value: float) -> tuple[bool, float]:
    if math.isnan(value):
        return True, 0.0
    if math.isinf(value):
        return False, MAX_DOUBLE if value > 0 else -MAX_DOUBLE
    return False, value

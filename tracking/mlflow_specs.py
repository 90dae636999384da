"""A finished trial as MLflow sees it: run name, tags, params, metric points, files.

Pure functions of a TrialRecord, shared by both ways of logging it (`MlflowTracker`'s client
path and the bulk writer in `tracking._mlflow_sql`), so the two cannot drift apart. Every
string that reaches MLflow passes `mask_secrets` and MLflow's length limits here.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np
from mlflow.entities import Param

from tracking.mlflow_tags import (
    ARCHIVE_TAG,
    CANDIDATE_TAG,
    CONFIRMATION_ROLE,
    DATA_SEED_TAG,
    DEVICE_TAG,
    ERROR_TAG,
    PARENT_RUN_ID_TAG,
    PRUNED_TAG,
    REUSED_FROM_TAG,
    ROLE_TAG,
    SEED_TAG,
    STATE_TAG,
    STUDY_TAG,
    TRIAL_NUMBER_TAG,
    TRIAL_ROLE,
)
from tracking.records import (
    EVERY_EPOCH,
    FINAL_METRICS,
    RUN_STATUS,
    TRIAL_COLUMNS,
    HistoryPolicy,
    TrialRecord,
    TrialState,
)
from tracking.secrets import mask_secrets
from trainer.metrics import ACCURACY_METRICS, METRICS

# MLflow truncates or rejects longer values depending on MLFLOW_TRUNCATE_LONG_VALUES
# (mlflow.utils.validation), so we truncate ourselves.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_ERROR_TAG_LENGTH = 500

MetricPoint = tuple[str, float, int, int]  # key, value, timestamp (epoch ms), step


@dataclass(frozen=True)
class RunSpec:
    """One finished run, as MlflowClient would be asked to log it.

    `status` is FINISHED, KILLED or FAILED; `metrics` are (key, value, timestamp, step)
    tuples, cheaper to build than mlflow Metric objects; `files` maps artifact file names
    (no folders) to their contents; times are epoch milliseconds.
    """

    run_name: str
    status: str
    start_time_ms: int
    end_time_ms: int
    tags: Mapping[str, str]
    params: Sequence[Param]
    metrics: Sequence[MetricPoint]
    files: Mapping[str, bytes]


@dataclass(frozen=True)
class Attached:
    """A file written with a batch of runs into an existing run's artifacts (a round's
    archive on the parent run), and removed with them if they fail."""

    run_id: str
    path: str  # relative to the run's artifact folder, `/`-separated
    data: bytes


def trial_run_name(rec: TrialRecord) -> str:
    """A run name that reads well in a run list, e.g. `#12 l2 λ=3.16`."""
    name = f"#{rec.number} {rec.penalty}"
    lambda_ = _float_or_none(rec.params.get("lambda"))
    if rec.penalty != "none" and lambda_ is not None:
        name += f" λ={lambda_:.3g}"
    l1_ratio = _float_or_none(rec.params.get("l1_ratio"))
    if rec.penalty == "elastic_net" and l1_ratio is not None:
        name += f" α={l1_ratio:.2g}"
    return name


def trials_csv(records: Sequence[TrialRecord]) -> bytes:
    """One row per record, ordered by trial number, columns TRIAL_COLUMNS."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TRIAL_COLUMNS)
    for rec in sorted(records, key=lambda r: r.number):
        row: dict[str, Any] = {
            "number": rec.number,
            "state": rec.state.value,
            "penalty": rec.params.get("penalty"),
            "lambda": rec.params.get("lambda"),
            "l1_ratio": rec.params.get("l1_ratio"),
            "lr": rec.params.get("lr"),
            "value": rec.value,
            **{name: rec.final.get(name) for name in FINAL_METRICS},
            "duration_s": rec.duration_s,
            "device": rec.device,
            "mlflow_run_id": rec.mlflow_run_id,
            "error": None if rec.error is None else mask_secrets(rec.error),
            "reused_from": rec.reused_from,
        }
        writer.writerow(["" if row[c] is None else row[c] for c in TRIAL_COLUMNS])
    return out.getvalue().encode()


HISTORY_FILE = "history.csv"  # every trial's whole per-epoch history, whatever the policy
ARCHIVE_FOLDER = "rounds"  # the parent run's folder of round archives


def trial_spec(
    rec: TrialRecord,
    parent_run_id: str | None,
    history: HistoryPolicy = EVERY_EPOCH,
    archive: str | None = None,
    role: str = TRIAL_ROLE,
) -> RunSpec:
    """`archive`: the path, among the parent run's artifacts, of the round's archive that
    holds this trial's files (`round_archive`); the run then has none of its own. `role`:
    the run's `sweeps.role` tag."""
    status = RUN_STATUS.get(rec.state)
    if status is None:
        raise ValueError(f"trial {rec.number} is {rec.state}: only finished trials are logged")
    return RunSpec(
        run_name=tag_value(trial_run_name(rec)),
        status=status,
        start_time_ms=rec.start_time_ms,
        end_time_ms=rec.end_time_ms,
        tags=tag_dict({**_trial_tags(parent_run_id, rec, archive), ROLE_TAG: role}),
        params=_trial_params(rec),
        metrics=_trial_metrics(rec, history),
        files={} if archive else trial_files(rec),
    )


def _trial_tags(
    parent_run_id: str | None, rec: TrialRecord, archive: str | None = None
) -> dict[str, str]:
    tags = {
        STUDY_TAG: rec.study,
        TRIAL_NUMBER_TAG: str(rec.number),
        STATE_TAG: rec.state.value,
        DEVICE_TAG: rec.device,
        ROLE_TAG: TRIAL_ROLE,
    }
    if parent_run_id is not None:
        tags[PARENT_RUN_ID_TAG] = parent_run_id
    if rec.state is TrialState.PRUNED:
        tags[PRUNED_TAG] = "true"
    if rec.error:
        tags[ERROR_TAG] = mask_secrets(rec.error)[:MAX_ERROR_TAG_LENGTH]
    if rec.reused_from is not None:
        tags[REUSED_FROM_TAG] = str(rec.reused_from)
    if archive is not None:
        tags[ARCHIVE_TAG] = archive
    return tags


def confirmation_spec(rec: TrialRecord, parent_run_id: str) -> RunSpec:
    """A confirmation run: candidate trial `rec.number` retrained on `rec.params["seed"]`.

    Tagged `sweeps.role = confirmation` with `sweeps.candidate`, `sweeps.seed` and
    `sweeps.data_seed`, and no `sweeps.trial_number`: whatever counts a study's trial runs
    never counts it."""
    spec = trial_spec(rec, parent_run_id)
    tags = {k: v for k, v in spec.tags.items() if k != TRIAL_NUMBER_TAG}
    tags.update(
        {
            ROLE_TAG: CONFIRMATION_ROLE,
            CANDIDATE_TAG: str(rec.number),
            SEED_TAG: str(rec.params["seed"]),
            DATA_SEED_TAG: str(rec.params["data_seed"]),
        }
    )
    name = f"confirm {trial_run_name(rec)} seed {rec.params['seed']}"
    return dataclasses.replace(spec, tags=tag_dict(tags), run_name=tag_value(name))


def _trial_params(rec: TrialRecord) -> list[Param]:
    return params_of(rec.params)


def params_of(values: Mapping[str, object]) -> list[Param]:
    """MLflow params of `values`, masked and cut to MLflow's length. A number cannot hold a
    secret; anything else (a task option naming a URL) is masked."""
    return [
        Param(key, _param_text(value)[:MAX_PARAM_VALUE_LENGTH]) for key, value in values.items()
    ]


def _param_text(value: object) -> str:
    if value is None or isinstance(value, bool | int | float):
        return str(value)
    return mask_secrets(str(value))


def _trial_metrics(rec: TrialRecord, history: HistoryPolicy) -> list[MetricPoint]:
    """The per-epoch history (step = epoch from 1) at the epochs `history` logs, then the
    final accuracies (if any), `value` and `duration_s`.

    Epoch timestamps are spread evenly over the trial's duration: the trainer does not
    record them, and MLflow's relative-time axis then still reads sensibly.
    """
    epochs = max((len(rec.history.get(name, ())) for name in METRICS), default=0)
    start, span_ms = rec.start_time_ms, max(rec.end_time_ms - rec.start_time_ms, 0)
    metrics: list[MetricPoint] = []
    for name in METRICS:
        values = rec.history.get(name) or []
        metrics += [
            (name, float(values[i - 1]), start + span_ms * i // epochs, i)
            for i in history.steps(len(values))
        ]
        final = rec.final.get(name)
        if not values and final is not None:
            metrics.append((name, float(final), rec.end_time_ms, 0))
    # Final-only values (a classification task's accuracies) sit at the last epoch's step.
    for name in ACCURACY_METRICS:
        final = rec.final.get(name)
        if final is not None:
            metrics.append((name, float(final), rec.end_time_ms, epochs))
    if rec.value is not None:
        metrics.append(("value", float(rec.value), rec.end_time_ms, epochs))
    metrics.append(("duration_s", float(rec.duration_s), rec.end_time_ms, epochs))
    return metrics


def trial_files(rec: TrialRecord) -> dict[str, bytes]:
    """A trial's artifact files: config.json, history.csv, model_state_dict.pt."""
    config = {key: _json_value(value) for key, value in rec.params.items()}
    config |= {"study": rec.study, "number": rec.number, "state": rec.state.value}
    files = {"config.json": json.dumps(config, indent=2, default=str).encode()}
    if any(rec.history.get(name) for name in METRICS):
        files[HISTORY_FILE] = history_csv(rec.history)
    if rec.weights is not None:
        files["model_state_dict.pt"] = rec.weights
    return files


_HISTORY_ROW = "%d" + ",%.9g" * len(METRICS) + "\n"  # 9 digits: any float32, exactly


@functools.lru_cache(maxsize=8)
def _history_rows(epochs: int) -> str:
    """The format of `epochs` rows at once: one `%` per trial instead of one per row."""
    return _HISTORY_ROW * epochs


def history_csv(history: Mapping[str, Sequence[float]]) -> bytes:
    """`epoch` and the METRICS, one row per epoch, each value to float32 precision, the
    precision the trainer computes in (≤ 9 digits instead of repr's 17: half the file). A
    value beyond float32's range (a float64 task diverging) is written as it is."""
    columns = [history.get(name, ()) for name in METRICS]
    epochs = max(len(column) for column in columns)
    header = ",".join(("epoch", *METRICS)) + "\n"
    if all(len(column) == epochs for column in columns):  # always, for a trial's record
        # One float32 rounding for the table, then one format per row.
        table = np.empty((epochs, len(columns) + 1), dtype=np.float64)
        table[:, 0] = np.arange(1, epochs + 1)
        table[:, 1:] = _to_float32(np.asarray(columns, dtype=np.float64)).T
        return (header + _history_rows(epochs) % tuple(table.ravel().tolist())).encode()
    out = io.StringIO()  # ragged columns (a hand-made history): empty cells past the end
    out.write(header)
    for i in range(epochs):
        cells = [f"{_to_float32(np.float64(c[i])):.9g}" if i < len(c) else "" for c in columns]
        out.write(",".join((str(i + 1), *cells)) + "\n")
    return out.getvalue().encode()


def read_history_csv(data: bytes) -> dict[str, list[float]]:
    """`history_csv` read back (float32 values as Python floats)."""
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    return {
        m: _to_float32(np.array([r[m] for r in rows if r[m] != ""], dtype=np.float64)).tolist()
        for m in METRICS
    }


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _to_float32(values: Any) -> Any:
    """`values` (a float64 array or scalar) rounded to float32, as float64; those beyond
    float32's range kept as they are, not turned into infinities."""
    fits = ~(np.abs(values) > _FLOAT32_MAX)  # NaN and ±inf fit
    return np.where(fits, np.where(fits, values, 0.0).astype(np.float32), values)


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    return mask_secrets(str(value))


def tag_value(value: str) -> str:
    return mask_secrets(value)[:MAX_TAG_VALUE_LENGTH]


def tag_dict(tags: Mapping[str, str]) -> dict[str, str]:
    return {key: tag_value(value) for key, value in tags.items()}


def is_local_location(location: str) -> bool:
    """Whether an artifact location or URI is a path on this machine (where the bulk writer
    writes files itself)."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return parsed.netloc in ("", "localhost")
    return parsed.scheme == "" and os.path.isabs(location)


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


# --- a round's files in one archive ----------------------------------------------------
#
# A trial's three files cost five filesystem entries (its run folder, `artifacts`, the
# files), which on a slow disk take longer than training it in a stack; a round of many
# trials keeps them in one zip on the parent run instead, `trials/<number>/<file>` holding
# exactly what the trial's own run would have held.


def archive_path(recs: Sequence[TrialRecord]) -> str:
    """Where a round's archive goes among the parent run's artifacts (trial numbers are
    unique in a study, so no two rounds share a name)."""
    numbers = sorted(rec.number for rec in recs)
    return f"{ARCHIVE_FOLDER}/trials-{numbers[0]:06d}-{numbers[-1]:06d}.zip"


def round_archive(recs: Sequence[TrialRecord]) -> bytes:
    """The round's trials' files (`trial_files`) in one zip, stored uncompressed: the
    weights do not compress and the histories are small."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for rec in recs:
            for name, data in trial_files(rec).items():
                archive.writestr(f"trials/{rec.number}/{name}", data)
    return buffer.getvalue()


def archived_files(data: bytes, number: int) -> dict[str, bytes]:
    """Trial `number`'s files from a round's archive."""
    prefix = f"trials/{number}/"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {
            name.removeprefix(prefix): archive.read(name)
            for name in archive.namelist()
            if name.startswith(prefix)
        }

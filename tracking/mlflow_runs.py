"""MLflow logging of a study: one experiment, one parent run, one child run per trial.

Everything goes through an injected (or lazily created) `MlflowClient`; MLflow's fluent
API and its process-global active run are never touched, so workers, threads and tests
cannot step on each other. Importing mlflow takes seconds: only this module imports it,
and only when tracking is on.

A trial is logged after it ended. Into a SQL tracking store (SQLite, PostgreSQL) finished
trials are written straight into MLflow's tables, many in one transaction
(`tracking.mlflow_bulk`: ~10 ms instead of ~130-170 ms a trial). Otherwise (an MLflow server, an
untested MLflow schema) each goes in as few round trips as MLflow allows: create_run (with
every tag), log_batch (params and the whole metric history; more calls only past MLflow's
per-call limits), one log_artifacts, set_terminated.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tracking.errors import TrackingError
from tracking.figures import lambda_figure
from tracking.mlflow_bulk import BulkRunWriter, MetricPoint, RunSpec, open_bulk_writer
from tracking.records import METRICS, TrialRecord, TrialState
from tracking.secrets import mask_secrets

logger = logging.getLogger(__name__)

# MLflow's limits (mlflow.utils.validation): per log_batch call at most 100 params, 100 tags,
# 1000 metrics and 1000 entities in all; values longer than these are rejected or truncated
# depending on MLFLOW_TRUNCATE_LONG_VALUES, so we truncate ourselves.
MAX_PARAMS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_ERROR_TAG_LENGTH = 500

RUN_STATUS = {
    TrialState.COMPLETE: "FINISHED",
    TrialState.PRUNED: "KILLED",
    TrialState.FAIL: "FAILED",
}
TRIALS_CSV_COLUMNS = (
    "number",
    "state",
    "penalty",
    "lambda",
    "l1_ratio",
    "value",
    "train_loss",
    "val_loss",
    "test_loss",
    "w_norm",
    "penalty_value",
    "duration_s",
    "device",
    "mlflow_run_id",
)
TRIAL_FILTER = "tags.`sweeps.role` = 'trial'"
SEARCH_PAGE_SIZE = 1000  # search_runs' maximum page
# MLflow errors and the OSErrors of an unreachable server or an unusable path.
_STORE_ERRORS = (MlflowException, OSError)


@dataclass(frozen=True)
class ParentRef:
    """The study's experiment and parent run."""

    experiment_id: str
    run_id: str


@dataclass(frozen=True)
class RunSummary:
    """One child run as `trial_runs` sees it; `state` is the sweeps.state tag."""

    run_id: str
    status: str
    state: str | None
    trial_number: int


class MlflowTracker:
    """Logs studies and trials to MLflow through one `MlflowClient`.

    Args:
        tracking_uri: the MLflow tracking URI (`sqlite:///...` or `http(s)://host:port`).
        artifact_root: where artifacts go for a local tracking store (e.g. HOME/mlartifacts);
            None for a server, which serves artifacts itself.
        client: the client to use; by default one is created for `tracking_uri` on first use
            (creating a fresh SQLite store runs MLflow's migrations, about 1.5-3 s).
        bulk: write finished runs straight into a SQL store's tables where that is safe
            (`tracking.mlflow_bulk`, decided once per tracker); False logs every run through
            the client, as against an MLflow server.
    """

    def __init__(
        self,
        tracking_uri: str,
        artifact_root: Path | None = None,
        client: MlflowClient | None = None,
        *,
        bulk: bool = True,
    ) -> None:
        self._tracking_uri = tracking_uri
        self._artifact_root = artifact_root
        self._client = client
        self._try_bulk = bulk
        self._bulk_writer: BulkRunWriter | None = None

    def ensure_experiment(self, study: str) -> str:
        """Returns the id of the study's experiment (named `study`), creating it if needed.

        Safe against another process creating it at the same time. A deleted experiment of
        that name is restored, since MLflow cannot create runs in it nor reuse its name.
        """
        with self._errors(f"cannot get or create the experiment {study!r}"):
            client = self._mlflow()
            found = client.get_experiment_by_name(study)
            if found is None:
                try:
                    location = self._artifact_location(study)
                    return str(client.create_experiment(study, artifact_location=location))
                except MlflowException as e:
                    if e.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                found = client.get_experiment_by_name(study)
                if found is None:
                    raise TrackingError(f"experiment {study!r} exists but cannot be read")
            if found.lifecycle_stage == "deleted":
                logger.warning("restoring the deleted MLflow experiment %r", mask_secrets(study))
                client.restore_experiment(found.experiment_id)
            return str(found.experiment_id)

    def create_parent_run(self, experiment_id: str, study: str) -> ParentRef:
        """Creates the study's parent run; it stays RUNNING until `finish_study`."""
        tags = {"sweeps.study": study, "sweeps.role": "parent"}
        with self._errors(f"cannot create the parent run of {study!r}"):
            run = self._mlflow().create_run(
                experiment_id, tags=_tag_dict(tags), run_name=_tag_value(study)
            )
        return ParentRef(experiment_id=experiment_id, run_id=run.info.run_id)

    def log_trials(self, parent: ParentRef, recs: Sequence[TrialRecord]) -> list[str]:
        """Logs finished trials as child runs of `parent`; returns their run ids in order.

        Into a SQL tracking store this is one transaction: all trials are logged or none.
        Otherwise each is logged as by `log_trial`, and a failure leaves those before it
        logged and the failing one FAILED.
        """
        specs = [_trial_spec(rec, parent.run_id) for rec in recs]
        return self._log_specs(parent.experiment_id, specs, recs)

    def log_trial(self, parent: ParentRef, rec: TrialRecord) -> str:
        """Logs one finished trial as a child run of `parent`; returns the run id."""
        return self.log_trials(parent, [rec])[0]

    def log_run(
        self, experiment_id: str, rec: TrialRecord, parent_run_id: str | None = None
    ) -> str:
        """Logs one finished training run (nested under `parent_run_id` when given).

        If anything fails after the run exists, the run is marked FAILED (never left
        RUNNING) and the error re-raised.
        """
        return self._log_specs(experiment_id, [_trial_spec(rec, parent_run_id)], [rec])[0]

    def _log_specs(
        self, experiment_id: str, specs: Sequence[RunSpec], recs: Sequence[TrialRecord]
    ) -> list[str]:
        writer = self._bulk()
        if writer is not None and specs:
            with self._errors(f"cannot log {_trials_label(recs)}"):
                run_ids = writer.log_runs(experiment_id, specs)
            if run_ids is not None:
                return run_ids
        return [
            self._log_with_client(experiment_id, spec, rec.number)
            for spec, rec in zip(specs, recs, strict=True)
        ]

    def _log_with_client(self, experiment_id: str, spec: RunSpec, number: int) -> str:
        with self._errors(f"cannot log trial {number}"):
            client = self._mlflow()
            run = client.create_run(
                experiment_id,
                start_time=spec.start_time_ms,
                tags=dict(spec.tags),
                run_name=spec.run_name,
            )
        run_id: str = run.info.run_id
        try:
            with self._errors(f"cannot log trial {number} to run {run_id}"):
                history = [Metric(key, value, ts, step) for key, value, ts, step in spec.metrics]
                for metrics, params in _batches(history, list(spec.params)):
                    client.log_batch(run_id, metrics=metrics, params=params, synchronous=True)
                self._log_files(run_id, spec.files)
                client.set_terminated(run_id, spec.status, end_time=spec.end_time_ms)
        except BaseException:
            self._fail_quietly(run_id)
            raise
        return run_id

    def finish_study(
        self,
        parent: ParentRef,
        records: Sequence[TrialRecord],
        extra_artifacts: Mapping[str, bytes] = {},
    ) -> None:
        """Attaches the λ figure, trials.csv and `extra_artifacts` to the parent run, logs
        best_value and ends the run FINISHED.

        `extra_artifacts` maps file names to contents (a path keeps only its file name).
        On failure the parent stays RUNNING, so the call can be repeated.
        """
        files = {"lambda_curves.png": lambda_figure(records), "trials.csv": trials_csv(records)}
        for name, data in extra_artifacts.items():
            files[_artifact_name(name)] = data
        with self._errors(f"cannot finish the parent run {parent.run_id}"):
            client = self._mlflow()
            self._log_files(parent.run_id, files)
            best = _best(records)
            if best is not None and best.value is not None:
                now_ms = int(time.time() * 1000)
                client.log_batch(
                    parent.run_id,
                    metrics=[Metric("best_value", best.value, now_ms, 0)],
                    tags=[RunTag("sweeps.best_trial", str(best.number))],
                    synchronous=True,
                )
            client.set_terminated(parent.run_id, "FINISHED")

    def trial_runs(self, experiment_id: str) -> dict[int, list[RunSummary]]:
        """Maps each trial number to the active child runs tagged with it, oldest first."""
        runs: dict[int, list[RunSummary]] = {}
        token: str | None = None
        with self._errors(f"cannot list the trial runs of experiment {experiment_id}"):
            while True:
                page = self._mlflow().search_runs(
                    [experiment_id],
                    filter_string=TRIAL_FILTER,
                    run_view_type=ViewType.ACTIVE_ONLY,
                    max_results=SEARCH_PAGE_SIZE,
                    order_by=["attributes.start_time ASC"],
                    page_token=token,
                )
                for run in page:
                    summary = _summary(run.info.run_id, run.info.status, run.data.tags)
                    if summary is not None:
                        runs.setdefault(summary.trial_number, []).append(summary)
                token = page.token
                if not token:
                    return runs

    def terminate(self, run_id: str, status: str) -> None:
        """Ends a run with `status` (FINISHED, FAILED or KILLED), e.g. an orphaned one."""
        with self._errors(f"cannot terminate run {run_id}"):
            self._mlflow().set_terminated(run_id, status)

    def set_state_tag(self, run_id: str, state: str) -> None:
        """Sets the run's sweeps.state tag (a TrialState value)."""
        with self._errors(f"cannot tag run {run_id}"):
            self._mlflow().set_tag(run_id, "sweeps.state", _tag_value(state), synchronous=True)

    def _bulk(self) -> BulkRunWriter | None:
        if self._try_bulk and self._bulk_writer is None:
            self._bulk_writer = open_bulk_writer(self._tracking_uri)
            self._try_bulk = self._bulk_writer is not None
        return self._bulk_writer

    def _mlflow(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self._tracking_uri)
        return self._client

    def _artifact_location(self, study: str) -> str | None:
        # A hash, not the name: quotes, spaces or "../" in a study name must not reach a path.
        if self._artifact_root is None:
            return None
        digest = hashlib.sha256(study.encode()).hexdigest()[:16]
        return (self._artifact_root.resolve() / digest).as_uri()

    def _log_files(self, run_id: str, files: Mapping[str, bytes]) -> None:
        with tempfile.TemporaryDirectory(prefix="sweeps-artifacts-") as tmp:
            for name, data in files.items():
                (Path(tmp) / name).write_bytes(data)
            self._mlflow().log_artifacts(run_id, tmp)

    def _fail_quietly(self, run_id: str) -> None:
        try:
            self._mlflow().set_terminated(run_id, "FAILED")
        except Exception as e:  # the original error matters more; this one is only logged
            logger.warning("could not mark run %s FAILED: %s", run_id, _one_line(e))

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turns MLflow's and the network's errors into one masked line of TrackingError."""
        try:
            yield
        except _STORE_ERRORS as e:
            message = mask_secrets(f"MLflow at {self._tracking_uri}: {what}: {_one_line(e)}")
            # The raw error may carry a password (MLflow quotes URLs): then do not chain it.
            leaks = mask_secrets(str(e)) != str(e) or mask_secrets(repr(e)) != repr(e)
            raise TrackingError(message) from (None if leaks else e)


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
    """One row per record, ordered by trial number, columns TRIALS_CSV_COLUMNS."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TRIALS_CSV_COLUMNS)
    for rec in sorted(records, key=lambda r: r.number):
        row: dict[str, Any] = {
            "number": rec.number,
            "state": rec.state.value,
            "penalty": rec.params.get("penalty"),
            "lambda": rec.params.get("lambda"),
            "l1_ratio": rec.params.get("l1_ratio"),
            "value": rec.value,
            **{name: rec.final.get(name) for name in METRICS},
            "duration_s": rec.duration_s,
            "device": rec.device,
            "mlflow_run_id": rec.mlflow_run_id,
        }
        writer.writerow(["" if row[c] is None else row[c] for c in TRIALS_CSV_COLUMNS])
    return out.getvalue().encode()


def _trial_spec(rec: TrialRecord, parent_run_id: str | None) -> RunSpec:
    status = RUN_STATUS.get(rec.state)
    if status is None:
        raise ValueError(f"trial {rec.number} is {rec.state}: only finished trials are logged")
    return RunSpec(
        run_name=_tag_value(trial_run_name(rec)),
        status=status,
        start_time_ms=rec.start_time_ms,
        end_time_ms=rec.end_time_ms,
        tags=_tag_dict(_trial_tags(parent_run_id, rec)),
        params=_trial_params(rec),
        metrics=_trial_metrics(rec),
        files=_trial_files(rec),
    )


def _trials_label(recs: Sequence[TrialRecord]) -> str:
    numbers = [str(rec.number) for rec in recs]
    if len(numbers) == 1:
        return f"trial {numbers[0]}"
    shown = ", ".join(numbers[:5]) + (", ..." if len(numbers) > 5 else "")
    return f"{len(numbers)} trials ({shown})"


def _trial_tags(parent_run_id: str | None, rec: TrialRecord) -> dict[str, str]:
    tags = {
        "sweeps.study": rec.study,
        "sweeps.trial_number": str(rec.number),
        "sweeps.state": rec.state.value,
        "sweeps.device": rec.device,
        "sweeps.role": "trial",
    }
    if parent_run_id is not None:
        tags["mlflow.parentRunId"] = parent_run_id
    if rec.state is TrialState.PRUNED:
        tags["sweeps.pruned"] = "true"
    if rec.error:
        tags["sweeps.error"] = mask_secrets(rec.error)[:MAX_ERROR_TAG_LENGTH]
    return tags


def _trial_params(rec: TrialRecord) -> list[Param]:
    return [
        Param(key, mask_secrets(str(value))[:MAX_PARAM_VALUE_LENGTH])
        for key, value in rec.params.items()
    ]


def _trial_metrics(rec: TrialRecord) -> list[MetricPoint]:
    """The per-epoch history (step = epoch from 1) and the final `value` and `duration_s`.

    Epoch timestamps are spread evenly over the trial's duration: the trainer does not
    record them, and MLflow's relative-time axis then still reads sensibly.
    """
    epochs = max((len(rec.history.get(name, ())) for name in METRICS), default=0)
    span_ms = max(rec.end_time_ms - rec.start_time_ms, 0)

    def at(step: int) -> int:
        return rec.start_time_ms + (span_ms * step // epochs if epochs else span_ms)

    metrics: list[MetricPoint] = []
    for name in METRICS:
        values = rec.history.get(name) or []
        metrics += [(name, float(v), at(i), i) for i, v in enumerate(values, start=1)]
        final = rec.final.get(name)
        if not values and final is not None:
            metrics.append((name, float(final), rec.end_time_ms, 0))
    if rec.value is not None:
        metrics.append(("value", float(rec.value), rec.end_time_ms, epochs))
    metrics.append(("duration_s", float(rec.duration_s), rec.end_time_ms, epochs))
    return metrics


def _batches(
    metrics: list[Metric], params: list[Param]
) -> Iterator[tuple[list[Metric], list[Param]]]:
    """Splits params and metrics into as few log_batch calls as MLflow's limits allow."""
    while metrics or params:
        batch_params, params = params[:MAX_PARAMS_PER_BATCH], params[MAX_PARAMS_PER_BATCH:]
        room = MAX_ENTITIES_PER_BATCH - len(batch_params)
        batch_metrics, metrics = metrics[:room], metrics[room:]
        yield batch_metrics, batch_params


def _trial_files(rec: TrialRecord) -> dict[str, bytes]:
    config = {key: _json_value(value) for key, value in rec.params.items()}
    config |= {"study": rec.study, "number": rec.number, "state": rec.state.value}
    files = {"config.json": json.dumps(config, indent=2, default=str).encode()}
    if rec.weights is not None:
        files["model_state_dict.pt"] = rec.weights
    return files


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    return mask_secrets(str(value))


def _best(records: Sequence[TrialRecord]) -> TrialRecord | None:
    complete = [
        r
        for r in records
        if r.state is TrialState.COMPLETE and r.value is not None and math.isfinite(r.value)
    ]
    return min(complete, key=lambda r: (r.value, r.number), default=None)


def _summary(run_id: str, status: str, tags: Mapping[str, str]) -> RunSummary | None:
    try:
        number = int(tags["sweeps.trial_number"])
    except (KeyError, ValueError):
        return None
    return RunSummary(run_id, status, tags.get("sweeps.state"), number)


def _artifact_name(name: str) -> str:
    base = Path(name).name
    if base in ("", ".", ".."):
        raise ValueError(f"not a file name for an artifact: {name!r}")
    return base


def _tag_value(value: str) -> str:
    return mask_secrets(value)[:MAX_TAG_VALUE_LENGTH]


def _tag_dict(tags: Mapping[str, str]) -> dict[str, str]:
    return {key: _tag_value(value) for key, value in tags.items()}


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return mask_secrets(text)[:300]

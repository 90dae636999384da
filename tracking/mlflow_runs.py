"""MLflow logging of a study: one experiment, one parent run, one child run per trial.

Everything goes through an injected (or lazily created) `MlflowClient`; MLflow's fluent
API and its process-global active run are never touched, so workers, threads and tests
cannot step on each other. Importing mlflow is slow: only the tracking modules import it,
and only when tracking is on.

A trial is logged after it ended. Into a SQL tracking store (SQLite, PostgreSQL) finished
trials are written straight into MLflow's tables, many in one transaction, where the fenced
`tracking._mlflow_sql` says that is safe: MLflow's per-call ORM work would otherwise cost
more than the batched training it records. Otherwise (an MLflow server, an untested MLflow,
SWEEPS_MLFLOW_PUBLIC=1) each goes in as few round trips as MLflow allows: create_run (with
every tag), log_batch (params and the whole metric history; more calls only past MLflow's
per-call limits), one log_artifacts, set_terminated. What a trial's run holds (name, tags,
params, metrics, files) is decided in `tracking.mlflow_specs`, the same for both paths.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import math
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Metric, Param, Run, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tracking._mlflow_sql import RunWriter, open_bulk_writer
from tracking.errors import TrackingError
from tracking.figures import lambda_figure
from tracking.mlflow_specs import (
    HISTORY_FILE,
    Attached,
    RunSpec,
    archive_path,
    archived_files,
    confirmation_spec,
    is_local_location,
    params_of,
    read_history_csv,
    round_archive,
    tag_dict,
    tag_value,
    trial_spec,
    trials_csv,
)
from tracking.mlflow_store import creating_store, seed_sqlite_store
from tracking.mlflow_tags import (
    ARCHIVE_TAG,
    BEST_L1_RATIO_TAG,
    BEST_LAMBDA_TAG,
    BEST_PENALTY_TAG,
    BEST_RUN_ID_TAG,
    BEST_TRIAL_TAG,
    CANDIDATE_TAG,
    CONFIRMATION_ROLE,
    DATA_SEED_TAG,
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    NOTE_TAG,
    PARENT_ROLE,
    PARENT_RUN_ID_TAG,
    ROLE_TAG,
    SEED_TAG,
    STATE_TAG,
    STUDY_TAG,
    STUDY_UID_TAG,
    TRAIN_ROLE,
    TRIAL_NUMBER_TAG,
    TRIAL_ROLE,
    USER_TAG,
    tag_filter,
)
from tracking.records import EVERY_EPOCH, HistoryPolicy, TrialRecord, TrialState, now_ms
from tracking.secrets import mask_secrets
from tracking.store_files import holds_tables

logger = logging.getLogger(f"sweeps.{__name__}")  # under the package's logger

# MLflow's per-call limits of log_batch (mlflow.utils.validation): at most 100 params and
# 1000 entities in all.
MAX_PARAMS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
TRIAL_FILTER = tag_filter(ROLE_TAG, TRIAL_ROLE)
# MLflow's UI opens an experiment by its kind; without it, on its GenAI overview.
EXPERIMENT_KIND = {EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
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
    """One child run as `trial_runs` sees it; `state` is its `STATE_TAG`."""

    run_id: str
    status: str
    state: str | None
    trial_number: int


LAMBDA_FIGURE = "lambda_curves.png"  # the parent run's figure of the trials against λ


class MlflowTracker:
    """Logs studies and trials to MLflow through one `MlflowClient`.

    Args:
        tracking_uri: the MLflow tracking URI (`sqlite:///...` or `http(s)://host:port`).
        artifact_root: where artifacts go for a local tracking store (e.g. HOME/mlartifacts);
            None for a server, which serves artifacts itself.
        client: the client to use; by default one is created for `tracking_uri` on first use
            (a new SQLite store is copied from a template: `tracking.mlflow_store`).
        bulk: write finished runs straight into a SQL store's tables where that is safe
            (`tracking._mlflow_sql`, decided once per tracker); False logs every run
            through the client, as against an MLflow server.
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
        self._bulk_writer: RunWriter | None = None

    def close(self) -> None:
        """Close the bulk writer's connections (MLflow's client keeps its own engines)."""
        writer, self._bulk_writer = self._bulk_writer, None
        engine = getattr(writer, "engine", None)
        if engine is not None:
            engine.dispose()

    def ensure_experiment(self, study: str, uid: str | None = None) -> str:
        """Returns the id of the study's experiment (named `study`), creating it if needed.

        With `uid` (the study's identity, `ResultsStore.study_uid`) the experiment is the
        study's own: tagged with it when created or first claimed, and refused (TrackingError)
        when it carries another study's uid — a study of the same name in another storage.
        Safe against another process creating it at the same time. A deleted experiment of
        that name is restored, since MLflow cannot create runs in it nor reuse its name.
        """
        with self._errors(f"cannot get or create the experiment {study!r}"):
            client = self._mlflow()
            found = client.get_experiment_by_name(study)
            if found is None:
                try:
                    location = self._artifact_location(study)
                    tags = {**EXPERIMENT_KIND, **({} if uid is None else {STUDY_UID_TAG: uid})}
                    return str(
                        client.create_experiment(study, artifact_location=location, tags=tags)
                    )
                except MlflowException as e:
                    if e.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                found = client.get_experiment_by_name(study)
                if found is None:
                    raise TrackingError(f"experiment {study!r} exists but cannot be read")
            owner = found.tags.get(STUDY_UID_TAG)
            if uid is not None and owner not in (None, uid):
                raise TrackingError(
                    f"the MLflow experiment {study!r} in {mask_secrets(self._tracking_uri)}"
                    " belongs to another study of that name (another storage); use another"
                    " --study name or tracking store"
                )
            if found.lifecycle_stage == "deleted":
                logger.warning("restoring the deleted MLflow experiment %r", mask_secrets(study))
                client.restore_experiment(found.experiment_id)
            if uid is not None and owner is None:
                client.set_experiment_tag(found.experiment_id, STUDY_UID_TAG, uid)
            for key, value in EXPERIMENT_KIND.items():
                if found.tags.get(key) is None:  # made by an older sweeps, or by hand
                    client.set_experiment_tag(found.experiment_id, key, value)
            return str(found.experiment_id)

    def experiment_owner(self, study: str) -> str | None:
        """The uid the experiment named `study` is claimed by here (None: no such
        experiment, or not claimed)."""
        with self._errors(f"cannot read the experiment {study!r}"):
            found = self._mlflow().get_experiment_by_name(study)
        return None if found is None else found.tags.get(STUDY_UID_TAG)

    def find_experiment(self, study: str, uid: str) -> str | None:
        """The id of the study's experiment in this store, or None (nothing created);
        TrackingError when one of that name belongs to another study (see ensure_experiment)."""
        if self._client is None and not holds_tables(self._tracking_uri, "mlflow"):
            return None  # no store yet: looking must not create one
        with self._errors(f"cannot read the experiment {study!r}"):
            found = self._mlflow().get_experiment_by_name(study)
        if found is None:
            return None
        if found.tags.get(STUDY_UID_TAG) not in (None, uid):
            return self.ensure_experiment(study, uid)  # raises the one-line refusal
        return str(found.experiment_id)

    def find_parent_run(self, experiment_id: str, hint: str | None) -> str | None:
        """The study's parent run in this store: `hint` (the stored id) if it is an active
        parent run of this experiment here, else the oldest active one the experiment has,
        else None."""
        with self._errors(f"cannot find the parent run in experiment {experiment_id}"):
            client = self._mlflow()
            if hint is not None:
                try:
                    run = client.get_run(hint)
                except MlflowException:
                    run = None
                if (
                    run is not None
                    and run.info.experiment_id == experiment_id
                    and run.info.lifecycle_stage == "active"
                    and run.data.tags.get(ROLE_TAG) == PARENT_ROLE
                ):
                    return hint
            found = client.search_runs(
                [experiment_id],
                filter_string=tag_filter(ROLE_TAG, PARENT_ROLE),
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=1,
                order_by=["attributes.start_time ASC"],
            )
            return found[0].info.run_id if found else None

    def create_parent_run(
        self,
        experiment_id: str,
        study: str,
        params: Mapping[str, object] = {},
        description: str = "",
    ) -> ParentRef:
        """Creates the study's parent run, with the study's configuration as `params` and
        `description` as its note; it stays RUNNING until `finish_study`."""
        tags = {STUDY_TAG: study, ROLE_TAG: PARENT_ROLE, USER_TAG: _user()}
        if description:
            tags[NOTE_TAG] = description
        with self._errors(f"cannot create the parent run of {study!r}"):
            client = self._mlflow()
            run = client.create_run(experiment_id, tags=tag_dict(tags), run_name=tag_value(study))
            for _, batch in _batches([], params_of(params)):
                client.log_batch(run.info.run_id, params=batch, synchronous=True)
        return ParentRef(experiment_id=experiment_id, run_id=run.info.run_id)

    def log_best(self, parent: ParentRef, best: TrialRecord, finished: int) -> bool:
        """Shows `best` on the parent run (metrics best_value at step `finished`, tags
        naming its penalty, λ, l1_ratio, trial and child run) unless the parent already
        shows a better one (another worker's). Returns whether it did."""
        if best.value is None:
            return False
        with self._errors(f"cannot log the best trial on the parent run {parent.run_id}"):
            client = self._mlflow()
            shown = client.get_run(parent.run_id).data.metrics.get("best_value")
            if shown is not None and shown <= best.value:
                return False
            tags = {
                BEST_TRIAL_TAG: str(best.number),
                BEST_PENALTY_TAG: best.penalty,
                BEST_LAMBDA_TAG: f"{best.lambda_:.6g}",
                BEST_L1_RATIO_TAG: str(best.params.get("l1_ratio") or "-"),
            }
            if best.mlflow_run_id:
                tags[BEST_RUN_ID_TAG] = best.mlflow_run_id
            client.log_batch(
                parent.run_id,
                metrics=[Metric("best_value", best.value, now_ms(), finished)],
                tags=[RunTag(key, tag_value(value)) for key, value in tags.items()],
                synchronous=True,
            )
        return True

    def log_trials(
        self,
        parent: ParentRef,
        recs: Sequence[TrialRecord],
        history: HistoryPolicy = EVERY_EPOCH,
        *,
        archive: bool = False,
    ) -> list[str]:
        """Logs finished trials as child runs of `parent`; returns their run ids in order.
        `history` says which epochs become metric rows (all are in `history.csv`).
        `archive`: the trials' files go, as one zip, to the parent run
        (`mlflow_specs.round_archive`; each run tagged with its path), not to their runs.

        Into a SQL tracking store this is one transaction: all trials are logged or none.
        Otherwise each is logged as by `log_trial`, and a failure leaves those before it
        logged and the failing one FAILED.
        """
        if not archive or len(recs) < 2:
            specs = [trial_spec(rec, parent.run_id, history) for rec in recs]
            return self._log_specs(parent.experiment_id, specs, recs)
        path = archive_path(recs)
        specs = [trial_spec(rec, parent.run_id, history, path) for rec in recs]
        attached = Attached(parent.run_id, path, round_archive(recs))
        return self._log_specs(parent.experiment_id, specs, recs, attached)

    def log_trial(self, parent: ParentRef, rec: TrialRecord) -> str:
        """Logs one finished trial as a child run of `parent`; returns the run id."""
        return self.log_trials(parent, [rec])[0]

    def log_run(
        self, experiment_id: str, rec: TrialRecord, parent_run_id: str | None = None
    ) -> str:
        """Logs one finished training run of no study (`sweeps train`; nested under
        `parent_run_id` when given), tagged `sweeps.role=train`: no study's check counts or
        repairs it.

        If anything fails after the run exists, the run is marked FAILED (never left
        RUNNING) and the error re-raised.
        """
        spec = trial_spec(rec, parent_run_id, role=TRAIN_ROLE)
        return self._log_specs(experiment_id, [spec], [rec])[0]

    def _log_specs(
        self,
        experiment_id: str,
        specs: Sequence[RunSpec],
        recs: Sequence[TrialRecord],
        attached: Attached | None = None,
    ) -> list[str]:
        writer = self._bulk()
        if writer is not None and specs:
            with self._errors(f"cannot log {_trials_label(recs)}"):
                run_ids = writer.log_runs(experiment_id, specs, attached)
            if run_ids is not None:
                return run_ids
        if attached is not None:  # first, so that no run names an archive not there
            folder, _, name = attached.path.rpartition("/")
            with self._errors(f"cannot log the archive of {_trials_label(recs)}"):
                self._log_files(attached.run_id, {name: attached.data}, folder or None)
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

        `extra_artifacts` maps file names to contents (a path keeps only its file name);
        it may hold the λ figure (LAMBDA_FIGURE) already drawn of these records. On
        failure the parent stays RUNNING, so the call can be repeated.
        """
        files = {_artifact_name(name): data for name, data in extra_artifacts.items()}
        if LAMBDA_FIGURE not in files:
            files[LAMBDA_FIGURE] = lambda_figure(records)
        files["trials.csv"] = trials_csv(records)
        with self._errors(f"cannot finish the parent run {parent.run_id}"):
            client = self._mlflow()
            self._log_files(parent.run_id, files)
            best = _best(records)
            if best is not None:
                self.log_best(parent, best, len(records))
            client.set_terminated(parent.run_id, "FINISHED")

    def complete_curves(
        self, run_ids: Sequence[str], *, on_read: Callable[[], None] = lambda: None
    ) -> list[str]:
        """Completes these trial runs (the best ones): every epoch of their curves as
        metrics where `--history` logged fewer, from their history.csv, and their own
        copy of their files where those went to a round's archive. Returns the runs that
        got anything. `on_read` is called once all that is missing is read, before any
        of it is written.

        Two processes completing the same runs at once would both write the same metric
        rows: the caller serializes them (`ResultsStore.study_lock`)."""
        missing: list[tuple[str, dict[str, bytes], list[Metric]]] = []
        archives: dict[tuple[str, str], bytes] = {}  # a round's archive, read once
        with self._errors("cannot complete the best trials' curves"):
            client = self._mlflow()
            for run_id in run_ids:
                run = client.get_run(run_id)
                files = self._archived(client, run, archives)
                points = self._missing_points(client, run, files.get(HISTORY_FILE))
                if points or files:
                    missing.append((run_id, files, points))
            on_read()
            for run_id, files, points in missing:
                if files:
                    self._log_files(run_id, files)
                for metrics, _ in _batches(points, []):
                    client.log_batch(run_id, metrics=metrics, synchronous=True)
        return [run_id for run_id, _, _ in missing]

    @staticmethod
    def _archived(
        client: MlflowClient, run: Run, archives: dict[tuple[str, str], bytes]
    ) -> dict[str, bytes]:
        """The run's files from its round's archive, if they are there and not yet in the
        run itself."""
        tags = run.data.tags
        path, parent = tags.get(ARCHIVE_TAG), tags.get(PARENT_RUN_ID_TAG)
        if path is None or parent is None:
            return {}
        if any(a.path == HISTORY_FILE for a in client.list_artifacts(run.info.run_id)):
            return {}  # copied by an earlier end of the study
        if (parent, path) not in archives:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    local = client.download_artifacts(parent, path, tmp)
                except (MlflowException, OSError):
                    return {}  # the archive is gone: the run keeps its metrics
                archives[(parent, path)] = Path(local).read_bytes()
        return archived_files(archives[(parent, path)], int(tags[TRIAL_NUMBER_TAG]))

    @staticmethod
    def _missing_points(client: MlflowClient, run: Run, history: bytes | None) -> list[Metric]:
        run_id = run.info.run_id
        logged = {m.step for m in client.get_metric_history(run_id, "val_loss")}
        if history is None:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    path = client.download_artifacts(run_id, HISTORY_FILE, tmp)
                except (MlflowException, OSError):
                    return []  # a run without one (logged by an older sweeps, or a repair)
                history = Path(path).read_bytes()
        curves = read_history_csv(history)
        info = run.info
        epochs = max(len(values) for values in curves.values())
        span_ms = max((info.end_time or info.start_time) - info.start_time, 0)
        return [
            Metric(name, value, info.start_time + span_ms * step // max(epochs, 1), step)
            for name, values in curves.items()
            for step, value in enumerate(values, start=1)
            if step not in logged
        ]

    def trial_runs(
        self, experiment_id: str, number: int | None = None
    ) -> dict[int, list[RunSummary]]:
        """Maps each trial number (only `number`, when given) to the active child runs
        tagged with it, oldest first."""
        runs: dict[int, list[RunSummary]] = {}
        where = TRIAL_FILTER
        if number is not None:
            where += f" and {tag_filter(TRIAL_NUMBER_TAG, str(int(number)))}"
        for run in self._active_runs(experiment_id, where, "trial runs"):
            summary = _summary(run.info.run_id, run.info.status, run.data.tags)
            if summary is not None:
                runs.setdefault(summary.trial_number, []).append(summary)
        return runs

    def _active_runs(self, experiment_id: str, where: str, what: str) -> list[Run]:
        """The experiment's active runs matching `where`, oldest first, every page."""
        found: list[Run] = []
        token: str | None = None
        with self._errors(f"cannot list the {what} of experiment {experiment_id}"):
            while True:
                page = self._mlflow().search_runs(
                    [experiment_id],
                    filter_string=where,
                    run_view_type=ViewType.ACTIVE_ONLY,
                    max_results=SEARCH_PAGE_SIZE,
                    order_by=["attributes.start_time ASC"],
                    page_token=token,
                )
                found.extend(page)
                token = page.token
                if not token:
                    return found

    def log_confirmations(self, parent: ParentRef, recs: Sequence[TrialRecord]) -> list[str]:
        """Logs confirmation runs (`mlflow_specs.confirmation_spec`) under the study's
        parent run, as `log_trials` logs trials; returns their run ids in order."""
        specs = [confirmation_spec(rec, parent.run_id) for rec in recs]
        return self._log_specs(parent.experiment_id, specs, recs)

    def confirmation_runs(self, experiment_id: str) -> dict[tuple[int, int, int], list[str]]:
        """Maps each (candidate, seed, data seed) to its active confirmation runs' ids,
        oldest first."""
        runs: dict[tuple[int, int, int], list[str]] = {}
        where = tag_filter(ROLE_TAG, CONFIRMATION_ROLE)
        for run in self._active_runs(experiment_id, where, "confirmation runs"):
            tags = run.data.tags
            key = (
                int(tags[CANDIDATE_TAG]),
                int(tags[SEED_TAG]),
                int(tags[DATA_SEED_TAG]),
            )
            runs.setdefault(key, []).append(run.info.run_id)
        return runs

    def log_files(self, run_id: str, files: Mapping[str, bytes]) -> None:
        """Attaches `files` (name → contents) to a run, e.g. the parent's confirm.csv."""
        with self._errors(f"cannot log files to run {run_id}"):
            self._log_files(run_id, files)

    def delete_runs(self, run_ids: Sequence[str]) -> None:
        """Ends (FAILED) then deletes these runs: duplicates of a trial's run, or runs a
        worker made for trials it no longer owns. Straight in the SQL store where runs are
        written there (a recording process never opens an MlflowClient)."""
        bulk = self._bulk()
        if bulk is not None:
            with self._errors("cannot delete trial runs"):
                bulk.delete_runs(run_ids)
            return
        with self._errors("cannot delete duplicate trial runs"):
            client = self._mlflow()
            for run_id in run_ids:
                client.set_terminated(run_id, "FAILED")  # a deleted run must not stay RUNNING
                client.delete_run(run_id)

    def terminate(self, run_id: str, status: str) -> None:
        """Ends a run with `status` (FINISHED, FAILED or KILLED), e.g. an orphaned one."""
        with self._errors(f"cannot terminate run {run_id}"):
            self._mlflow().set_terminated(run_id, status)

    def set_state_tag(self, run_id: str, state: str) -> None:
        """Sets the run's `STATE_TAG` (a TrialState value)."""
        with self._errors(f"cannot tag run {run_id}"):
            self._mlflow().set_tag(run_id, STATE_TAG, tag_value(state), synchronous=True)

    def _bulk(self) -> RunWriter | None:
        if self._try_bulk and self._bulk_writer is None:
            self._bulk_writer = open_bulk_writer(self._tracking_uri)
            self._try_bulk = self._bulk_writer is not None
        return self._bulk_writer

    def writes_in_bulk(self, experiment_id: str) -> bool:
        """Whether this experiment's runs go straight into the SQL store, never through
        MlflowClient: a tested SQL store, and artifacts on a local path."""
        if self._bulk() is None:
            return False
        return is_local_location(self._mlflow().get_experiment(experiment_id).artifact_location)

    def open_store(self) -> None:
        """Open the tracking store now (MLflow creates its tables in a new database), before
        the caller holds other connections: creating them takes three (`creating_store`)."""
        with self._errors("cannot open the tracking store"):
            self._mlflow()

    def _mlflow(self) -> MlflowClient:
        if self._client is None:
            seed_sqlite_store(self._tracking_uri)  # a copy: MLflow's migrations run once
            with creating_store(self._tracking_uri):  # the client opens (creates) the store
                self._client = MlflowClient(tracking_uri=self._tracking_uri)
        return self._client

    def _artifact_location(self, study: str) -> str | None:
        # A hash, not the name: quotes, spaces or "../" in a study name must not reach a path.
        if self._artifact_root is None:
            return None
        digest = hashlib.sha256(study.encode()).hexdigest()[:16]
        return (self._artifact_root.resolve() / digest).as_uri()

    def _log_files(
        self, run_id: str, files: Mapping[str, bytes], folder: str | None = None
    ) -> None:
        with tempfile.TemporaryDirectory(prefix="sweeps-artifacts-") as tmp:
            for name, data in files.items():
                (Path(tmp) / name).write_bytes(data)
            self._mlflow().log_artifacts(run_id, tmp, folder)

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


def _trials_label(recs: Sequence[TrialRecord]) -> str:
    numbers = [str(rec.number) for rec in recs]
    if len(numbers) == 1:
        return f"trial {numbers[0]}"
    shown = ", ".join(numbers[:5]) + (", ..." if len(numbers) > 5 else "")
    return f"{len(numbers)} trials ({shown})"


def _batches(
    metrics: list[Metric], params: list[Param]
) -> Iterator[tuple[list[Metric], list[Param]]]:
    """Splits params and metrics into as few log_batch calls as MLflow's limits allow."""
    while metrics or params:
        batch_params, params = params[:MAX_PARAMS_PER_BATCH], params[MAX_PARAMS_PER_BATCH:]
        room = MAX_ENTITIES_PER_BATCH - len(batch_params)
        batch_metrics, metrics = metrics[:room], metrics[room:]
        yield batch_metrics, batch_params


def _best(records: Sequence[TrialRecord]) -> TrialRecord | None:
    complete = [
        r
        for r in records
        if r.state is TrialState.COMPLETE and r.value is not None and math.isfinite(r.value)
    ]
    return min(complete, key=lambda r: (r.value, r.number), default=None)


def _summary(run_id: str, status: str, tags: Mapping[str, str]) -> RunSummary | None:
    try:
        number = int(tags[TRIAL_NUMBER_TAG])
    except (KeyError, ValueError):
        return None
    return RunSummary(run_id, status, tags.get(STATE_TAG), number)


def _artifact_name(name: str) -> str:
    base = Path(name).name
    if base in ("", ".", ".."):
        raise ValueError(f"not a file name for an artifact: {name!r}")
    return base


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return mask_secrets(text)[:300]


def _user() -> str:
    """Who runs the study, as MLflow's fluent API would name them (not "unknown")."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (some containers)
        return "unknown"

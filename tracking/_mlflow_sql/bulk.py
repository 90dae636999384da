"""Many finished runs written straight into MLflow's SQL tables in one transaction.

Why: logging a finished run through `MlflowClient` into a SQL store spends nearly all its
time in MLflow's ORM (a flush per call, latest-metric bookkeeping per point), far more than
a batched round's training (docs/performance.md). A finished run needs none of it: every row is
known up front (`rows` builds them). So the rows go in with bulk inserts into MLflow's own
tables (runs, tags, params, metrics, latest_metrics), filled as `SqlAlchemyStore.create_run`,
`log_batch` and `set_terminated` fill them, and the artifact files go straight into each
run's local artifact directory.

This writes another program's schema, so it is used only where that is known to be right
(the package's `open_bulk_writer`: a SQLite or PostgreSQL store at a tested schema revision)
and for an experiment whose artifact location is a local path; otherwise
`BulkRunWriter.log_runs` answers None and the caller logs through `MlflowClient`.

Failure semantics: the artifact files are written first, into run directories that did not
exist; then all rows of all runs are committed in one transaction, so a crash leaves at most
orphaned artifact directories, never a half-logged run nor one left RUNNING (rows are born
with their final status). If the transaction fails, the run directories are removed.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    BAD_REQUEST,
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)
from mlflow.store.tracking.dbmodels.models import (
    SqlExperiment,
    SqlLatestMetric,
    SqlMetric,
    SqlParam,
    SqlRun,
    SqlTag,
)
from mlflow.utils.file_utils import local_file_uri_to_path
from mlflow.utils.uri import append_to_uri_path

from tracking._mlflow_sql.rows import COLUMNS, Row, run_rows
from tracking.db import insert_rows
from tracking.mlflow_specs import Attached, RunSpec, is_local_location

logger = logging.getLogger(f"sweeps.{__name__}")  # under the package's logger

ARTIFACTS_FOLDER = "artifacts"  # SqlAlchemyStore.ARTIFACTS_FOLDER_NAME
TABLES = (SqlRun, SqlTag, SqlParam, SqlMetric, SqlLatestMetric)  # runs first: foreign keys


@dataclass(frozen=True)
class _RunRows:
    run_id: str
    run_dir: Path  # <experiment artifact location>/<run id>, created by us
    files: Mapping[str, bytes]
    rows: dict[str, list[Row]]  # table name -> rows in COLUMNS order


@dataclass(frozen=True)
class _RunPaths:
    """A run's artifact URI and local folder under one experiment location, as MLflow's
    URI helpers make them; they are asked once per batch, with a stand-in run id."""

    uri: str
    path: str
    stand_in: str

    @classmethod
    def of(cls, location: str) -> _RunPaths:
        stand_in = uuid.uuid4().hex  # occurs nowhere else in either string
        uri = _append_to_uri(location, stand_in, ARTIFACTS_FOLDER)
        return cls(uri, str(_local_path(uri)), stand_in)

    def of_run(self, run_id: str) -> tuple[str, Path]:
        """(artifact URI, local artifacts folder) of run `run_id`."""
        return self.uri.replace(self.stand_in, run_id), Path(
            self.path.replace(self.stand_in, run_id)
        )


def new_run_id() -> str:
    return uuid.uuid4().hex  # as SqlAlchemyStore.create_run


class BulkRunWriter:
    """Writes finished runs into one MLflow SQL store; one engine for the writer's life.

    Args:
        engine: an engine on a store whose schema revision is tested (`open_bulk_writer`).
        new_run_id: makes run ids; tests inject a duplicate to make the transaction fail.
    """

    def __init__(self, engine: sa.Engine, new_run_id: Callable[[], str] = new_run_id) -> None:
        self._engine = engine
        self._new_run_id = new_run_id

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    def log_runs(
        self, experiment_id: str, specs: Sequence[RunSpec], attached: Attached | None = None
    ) -> list[str] | None:
        """Logs `specs` as runs of the experiment, all or none; returns their ids in order.

        None, having written nothing, when the experiment's artifact location is not a local
        path (the caller then logs through MlflowClient).
        """
        with _as_mlflow_errors():
            location = self._artifact_location(experiment_id)
            if not is_local_location(location):
                return None
            where = _RunPaths.of(location)
            runs = [self._rows(experiment_id, where, spec) for spec in specs]
            created: list[Path] = []
            try:
                if attached is not None:
                    created.append(self._attach(attached))
                _write_all_artifacts(runs, created)
                with self._engine.begin() as conn:
                    _insert(conn, runs)
            except BaseException:
                _remove(created)
                raise
            return [run.run_id for run in runs]

    def delete_runs(self, run_ids: Sequence[str]) -> None:
        """Ends (FAILED) and deletes these runs in one transaction, as MlflowClient's
        set_terminated and delete_run would: kept, marked deleted, for MLflow's gc."""
        if not run_ids:
            return
        runs = SqlRun.__table__
        now = int(time.time() * 1000)
        with _as_mlflow_errors(), self._engine.begin() as conn:
            conn.execute(
                sa.update(runs)
                .where(runs.c.run_uuid.in_(list(run_ids)))
                .values(
                    status="FAILED",
                    end_time=sa.func.coalesce(runs.c.end_time, now),
                    lifecycle_stage="deleted",
                    deleted_time=now,
                )
            )

    def _attach(self, attached: Attached) -> Path:
        """Writes `attached` into its run's local artifact folder; a file already there is
        not replaced (exclusive create)."""
        table = SqlRun.__table__
        query = sa.select(table.c.artifact_uri).where(table.c.run_uuid == attached.run_id)
        with self._engine.connect() as conn:
            uri = conn.execute(query).scalar_one_or_none()
        if uri is None or not is_local_location(uri):
            raise MlflowException(
                f"run {attached.run_id} has no local artifact folder", RESOURCE_DOES_NOT_EXIST
            )
        path = _local_path(str(uri)).joinpath(*attached.path.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "xb") as f:
            f.write(attached.data)
        return path

    def _artifact_location(self, experiment_id: str) -> str:
        """The experiment's artifact location; refused as SqlAlchemyStore.create_run does."""
        try:
            key = int(experiment_id)
        except ValueError:
            raise MlflowException(
                f"Invalid experiment id {experiment_id!r}", INVALID_PARAMETER_VALUE
            ) from None
        table = SqlExperiment.__table__
        query = sa.select(table.c.artifact_location, table.c.lifecycle_stage).where(
            table.c.experiment_id == key
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).one_or_none()
        if row is None:
            raise MlflowException(
                f"No Experiment with id={experiment_id} exists", RESOURCE_DOES_NOT_EXIST
            )
        if row.lifecycle_stage != "active":
            raise MlflowException(
                f"The experiment {experiment_id} must be in the 'active' state. "
                f"Current state is {row.lifecycle_stage}.",
                INVALID_PARAMETER_VALUE,
            )
        return str(row.artifact_location)

    def _rows(self, experiment_id: str, where: _RunPaths, spec: RunSpec) -> _RunRows:
        run_id = self._new_run_id()
        artifact_uri, artifacts = where.of_run(run_id)
        return _RunRows(
            run_id=run_id,
            run_dir=artifacts.parent,
            files={_file_name(name): data for name, data in spec.files.items()},
            rows=run_rows(run_id, int(experiment_id), artifact_uri, spec),
        )


def _file_name(name: str) -> str:
    if Path(name).name != name or name in ("", ".", ".."):
        raise ValueError(f"not a file name for an artifact: {name!r}")
    return name


def _append_to_uri(uri: str, *paths: str) -> str:
    return str(append_to_uri_path(uri, *paths))  # type: ignore[no-untyped-call]


def _local_path(uri: str) -> Path:
    return Path(local_file_uri_to_path(uri))  # type: ignore[no-untyped-call]


# Threads writing a batch's artifact files: creating a file is a few system calls that
# wait on the filesystem with the interpreter lock released, and on some disks (this
# project's reference machine) they take longer than training the trial; in parallel,
# they overlap.
ARTIFACT_WRITERS = 4


def _write_all_artifacts(runs: Sequence[_RunRows], created: list[Path]) -> None:
    """Every run's files; `created` gets each run directory made (for `_remove`), also
    when a write fails (the first failure is raised once all writes have ended)."""
    runs = [run for run in runs if run.files]  # as MlflowClient: no folder without a file
    if not runs:
        return
    for parent in {run.run_dir.parent for run in runs}:
        os.makedirs(parent, exist_ok=True)
    if len(runs) == 1:
        _write_artifacts(runs[0], created)
        return
    with ThreadPoolExecutor(min(ARTIFACT_WRITERS, len(runs))) as pool:
        futures = [pool.submit(_write_artifacts, run, created) for run in runs]
    for future in futures:
        future.result()


def _write_artifacts(run: _RunRows, created: list[Path]) -> None:
    # exist_ok=False: a run directory that is already there is not ours to fill or remove.
    os.mkdir(run.run_dir)
    created.append(run.run_dir)
    artifacts = os.path.join(run.run_dir, ARTIFACTS_FOLDER)
    os.mkdir(artifacts)
    for name, data in run.files.items():
        with open(os.path.join(artifacts, name), "wb") as f:
            f.write(data)


def _insert(conn: sa.Connection, runs: Sequence[_RunRows]) -> None:
    for model in TABLES:
        table = model.__table__
        rows = [row for run in runs for row in run.rows[table.name]]
        insert_rows(conn, table, COLUMNS[table.name], rows)


def _remove(paths: Sequence[Path]) -> None:
    """Removes what a failed batch wrote: run folders, and an attached file."""
    for run_dir in paths:
        try:
            if run_dir.is_dir():
                shutil.rmtree(run_dir)
            else:
                run_dir.unlink()
        except OSError as e:  # the error that brought us here matters more
            logger.warning("could not remove the artifacts of an unlogged run %s: %s", run_dir, e)


@contextmanager
def _as_mlflow_errors() -> Iterator[None]:
    """Turns SQLAlchemy's errors into MlflowException, as MLflow's own sessions do."""
    try:
        yield
    except sa.exc.OperationalError as e:
        raise MlflowException(str(e), TEMPORARILY_UNAVAILABLE) from e
    except sa.exc.SQLAlchemyError as e:
        raise MlflowException(str(e), BAD_REQUEST) from e

"""The fence around MLflow's private names: code here writes MLflow's SQL tables directly.

A finished run needs none of MLflow's per-call ORM machinery (every row is known up front),
so `bulk` inserts many finished runs into MLflow's own tables in one transaction, and
`template` builds the empty store that new SQLite stores are copied from. Both rest on
names MLflow does not promise to keep (its SQLAlchemy models and store, its validators and
URI helpers), so this package imports none of them itself: its submodules are imported
lazily, only for a store whose schema revision their tests were run against, and the caller
falls back to MLflow's public `MlflowClient` otherwise, or when SWEEPS_MLFLOW_PUBLIC=1
forces it. A fallback is announced once, at WARNING level, with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa

from tracking.connections import Use, budgeted
from tracking.db import engine_options, transient_faults_retried, use_wal
from tracking.private_names import PrivateNames

if TYPE_CHECKING:
    from tracking.mlflow_specs import Attached, RunSpec

FORCE_PUBLIC_ENV = "SWEEPS_MLFLOW_PUBLIC"
# MLflow schema revisions whose tables `bulk` was checked against (tests/tracking/
# test_mlflow_sql.py compares every client-visible field with MlflowClient's own logging).
# dc11669786a5: the head of MLflow 3.17.2. Add a revision only after those tests pass on it.
TESTED_SCHEMA_REVISIONS = frozenset({"dc11669786a5"})
SQL_BACKENDS = frozenset({"sqlite", "postgresql"})
SQLITE_BUSY_TIMEOUT_MS = 20_000  # what MLflow's own sessions wait for a locked SQLite file

MLFLOW = PrivateNames(
    "MLflow", FORCE_PUBLIC_ENV, logging.getLogger(f"sweeps.{__name__}")
)  # under the package's logger
public_forced = MLFLOW.public_forced
warn_once = MLFLOW.warn_once
BULK = "writing runs in bulk"  # what `warn_once` says takes the public API
ONE_ENGINE = "one engine for MLflow's store"  # ... and this


class RunWriter(Protocol):
    """Writes finished runs into an MLflow SQL store (`bulk.BulkRunWriter`)."""

    def log_runs(
        self, experiment_id: str, specs: Sequence[RunSpec], attached: Attached | None = None
    ) -> list[str] | None:
        """The new runs' ids in order, all logged or none (`attached`, a file for an
        existing run, with them); None, having written nothing, when the runs must go
        through MlflowClient instead."""
        ...

    def delete_runs(self, run_ids: Sequence[str]) -> None:
        """Ends (FAILED) and deletes these runs."""
        ...


def open_bulk_writer(tracking_uri: str) -> RunWriter | None:
    """A writer for `tracking_uri`, or None for the MlflowClient path: public path forced,
    not a SQLite/PostgreSQL URI (e.g. an http(s) server, which bears the ORM cost itself),
    a store whose schema revision is untested (warned once) or unreadable, or an MLflow
    without the private names `bulk` imports (warned once)."""
    if public_forced():
        return None
    try:
        url = sa.make_url(tracking_uri)
    except sa.exc.ArgumentError:
        return None
    if url.get_backend_name() not in SQL_BACKENDS:
        return None
    try:
        engine = store_engine(tracking_uri)
    except ImportError:  # no driver for the URI here: MlflowClient will say so
        return None
    revision = schema_revision(engine)
    if revision not in TESTED_SCHEMA_REVISIONS:
        if revision is not None:  # None: no store yet, or not MLflow's
            warn_once(BULK, f"MLflow's schema revision {revision} is untested here")
        _release(engine)
        return None
    try:
        from tracking._mlflow_sql.bulk import BulkRunWriter
    except ImportError as e:  # a private name gone in another MLflow
        warn_once(BULK, str(e))
        _release(engine)
        return None
    use_wal(engine)
    return BulkRunWriter(engine)


def schema_revision(engine: sa.Engine) -> str | None:
    """The store's MLflow schema revision (its alembic_version), None if it has none."""
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            revision = version.scalar_one_or_none()
    except sa.exc.SQLAlchemyError:
        return None
    return None if revision is None else str(revision)


def store_engine(tracking_uri: str) -> sa.Engine:
    """The engine on the MLflow SQL store at `tracking_uri`: on PostgreSQL this process's
    one, shared with MlflowClient (MLflow's engine cache, `engines`) and kept to the
    connection budget (`tracking.connections`); MLflow's own where it cannot be shared
    (warned once). On SQLite a new one, for a bulk writer alone."""
    url = sa.make_url(tracking_uri)
    if url.get_backend_name() != "postgresql" or public_forced():
        return _create_engine(url)
    try:
        from tracking._mlflow_sql.engines import shared_engine
    except ImportError as e:  # a private name gone in another MLflow
        warn_once(ONE_ENGINE, f"{e}: MLflow's store keeps connections of its own")
        return _create_engine(url)
    return shared_engine(tracking_uri, lambda: _create_engine(url))


def _release(engine: sa.Engine) -> None:
    """Close a bulk writer's engine that is not in use: a SQLite one; the shared PostgreSQL
    engine stays, MlflowClient's."""
    if engine.url.get_backend_name() == "sqlite":
        engine.dispose()


def _create_engine(url: sa.URL) -> sa.Engine:
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, pool_pre_ping=True)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = budgeted(sa.create_engine(url, **engine_options(url.drivername, Use.MLFLOW)))
    transient_faults_retried(engine)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # As MLflow's own sessions: enforce run_uuid foreign keys, wait for a locked file.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()

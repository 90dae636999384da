"""A new SQLite MLflow store starts as a copy of an empty one.

Creating an SQLite store, MLflow runs its whole Alembic history one migration at a time,
a cost every new SWEEPS_HOME would pay (every test, every benchmark run, a user's first
study). For one MLflow version the result is always the same empty schema, so the first
store made on a machine is also kept, empty, as a template in the user's cache
(`SWEEPS_CACHE`, default `$XDG_CACHE_HOME/sweeps`), one file per MLflow version, and later
new stores are copies of it. The template holds no experiment: MLflow creates its default
experiment, with the new store's own artifact location, when the copy is first opened, and
it checks the copy's schema revision then as for any store. Building the template uses
MLflow's store class directly, so it lives in the fence (`tracking._mlflow_sql.template`).
Whatever goes wrong here (a read-only cache, a full disk, an MLflow without that class, or
SWEEPS_MLFLOW_PUBLIC=1) falls back to MLflow creating the store itself.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import sqlalchemy as sa
from mlflow.exceptions import MlflowException
from mlflow.version import VERSION as MLFLOW_VERSION

from tracking._mlflow_sql import public_forced, store_engine, warn_once
from tracking.connections import Use, budgeted
from tracking.db import engine_options

logger = logging.getLogger(f"sweeps.{__name__}")  # under the package's logger


def cache_dir() -> Path:
    """Where templates live: SWEEPS_CACHE, else $XDG_CACHE_HOME/sweeps, else ~/.cache/sweeps."""
    explicit = os.environ.get("SWEEPS_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "sweeps"


def template_path() -> Path:
    return cache_dir() / f"mlflow-{MLFLOW_VERSION}-empty.db"


def seed_sqlite_store(tracking_uri: str) -> bool:
    """Creates the SQLite store at `tracking_uri` from the template if it does not exist yet.

    Returns whether it did; False for any other URI, an existing file, the public path
    forced, or a failure (then MLflow creates the store as usual when it is opened)."""
    url = sa.make_url(tracking_uri)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return False
    target = Path(url.database).expanduser()
    if target.exists() or not target.parent.is_dir() or public_forced():
        return False
    try:
        template = template_path()
        if not template.exists():
            _build_template(template)
        _copy_new(template, target)
    except ImportError as e:  # a private name gone in another MLflow
        warn_once("a new store from the template", str(e))
        return False
    except (OSError, sqlite3.Error, sa.exc.SQLAlchemyError, MlflowException) as e:
        logger.debug("no MLflow store template (%s); MLflow creates the store", e)
        return False
    return target.exists()


def _build_template(path: Path) -> None:
    from tracking._mlflow_sql.template import build_template

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".building-") as tmp:
        db = Path(tmp) / "store.db"
        build_template(db, Path(tmp).as_uri())
        # Another process building the same template at once is harmless: same content.
        os.replace(db, path)


def _copy_new(template: Path, target: Path) -> None:
    """Copies `template` to `target` unless `target` appeared meanwhile (another process
    seeding or MLflow creating it): the copy is linked into place, never over a file."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.seeding")
    try:
        # The backup API copies a consistent snapshot whatever the template's journal mode.
        with _connect(template) as source, _connect(partial) as copy:
            source.backup(copy)
        with suppress(FileExistsError):
            os.link(partial, target)
    finally:
        partial.unlink(missing_ok=True)


@contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection that commits (or rolls back) and is closed on leaving the block."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


# Key of the PostgreSQL advisory lock held while MLflow creates its schema: one fixed 64-bit
# number ("sweeps_f" in ASCII), distinct from the results store's migration lock.
_PG_CREATE_LOCK_KEY = int.from_bytes(b"sweeps_f", "big", signed=True)


@contextmanager
def creating_store(tracking_uri: str) -> Iterator[None]:
    """Held while MLflow opens (and on a fresh database creates) a PostgreSQL store: two
    processes creating MLflow's tables at once collide on its version table (one dies with
    UniqueViolation), so they take turns; the second then finds the tables made. Nothing
    to do for other stores (SQLite stores are created from a template, `seed_sqlite_store`)."""
    url = sa.make_url(tracking_uri)
    if url.get_backend_name() != "postgresql":
        yield
        return
    if not public_forced():
        store_engine(tracking_uri)  # the engine MlflowClient will use, made ours first
    # A connection of its own: MLflow's migrations take both of the store engine's.
    engine = budgeted(sa.create_engine(url, **engine_options(url.drivername, Use.PROBE)))
    try:
        with engine.connect() as conn:
            conn.execute(sa.select(sa.func.pg_advisory_lock(_PG_CREATE_LOCK_KEY)))
            try:
                yield
            finally:
                conn.execute(sa.select(sa.func.pg_advisory_unlock(_PG_CREATE_LOCK_KEY)))
                conn.commit()
    finally:
        engine.dispose()

"""Schema versions of the results tables: a cheap check, and Alembic upgrades under a lock.

Alembic is slow to import, so it is imported only when an upgrade actually runs: query
commands on an up-to-date store never pay for it.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from tracking.errors import TrackingError
from tracking.results.engine import database_errors, make_engine, masked_url
from tracking.results.models import HEAD_REVISION, KNOWN_REVISIONS, VERSION_TABLE

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Key of the PostgreSQL advisory lock that serializes migrations: one fixed 64-bit number
# ("sweeps_m" in ASCII), distinct from anything Optuna or MLflow take.
_PG_LOCK_KEY = int.from_bytes(b"sweeps_m", "big", signed=True)
_version = sa.table(VERSION_TABLE, sa.column("version_num", sa.String))


def current_revision(conn: sa.Connection) -> str | None:
    """The revision the results tables are at; None when they were never created."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(sa.select(_version.c.version_num)).scalar_one_or_none()


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the results tables of the database at `url` to `revision`.

    Safe when several processes call it at once. Tests use it to create an old schema.

    Args:
        url: The database URL.
        revision: An Alembic revision id ("0001", "0002") or "head".

    Raises:
        TrackingError: The URL is malformed or the database is at a revision this version of
            sweeps does not know.
    """
    engine = make_engine(url)
    try:
        with database_errors(engine):
            upgrade_engine(engine, revision)
    finally:
        engine.dispose()


def upgrade_engine(engine: sa.Engine, revision: str = "head") -> None:
    """`upgrade` on an existing engine: lock, look at the version table again, migrate."""
    target = HEAD_REVISION if revision == "head" else revision
    with _exclusive(engine) as conn:
        # Another process may have migrated while we waited for the lock.
        found = current_revision(conn)
        if found == target:
            return
        if found is not None and found not in KNOWN_REVISIONS:
            raise TrackingError(
                f"the results tables in '{masked_url(engine.url.render_as_string())}' are at "
                f"revision '{found}', which this version of sweeps does not know; upgrade sweeps"
            )
        _run_alembic(conn, target)


@contextmanager
def _exclusive(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection in a transaction, held by one process at a time per database."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            # Transaction-scoped: released by the commit that publishes the new schema.
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
            yield conn
    elif engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        lock = Path(f"{engine.url.database}.migrate.lock")
        # Connecting first reports an unusable database as such, not as a lock-file problem.
        with engine.connect() as conn, _file_lock(lock), conn.begin():
            yield conn
    else:
        # No cross-process lock here; a racing loser fails on the version table's primary key.
        with engine.begin() as conn:
            yield conn


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # SQLite runs DDL outside transactions, so its own locks cannot serialize a migration.
    try:
        handle = path.open("a")
    except OSError as e:
        raise TrackingError(f"cannot create the migration lock file {path}: {e.strerror}") from e
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _run_alembic(conn: sa.Connection, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    # ConfigParser interpolates '%', which a checkout path may contain.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.attributes["connection"] = conn
    command.upgrade(config, revision)

"""Engine settings shared by Optuna's storage and the results store (one database)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from tracking.connections import Use, budgeted, pool_options


def engine_options(url: str, use: Use = Use.STORAGE) -> dict[str, Any]:
    """SQLite waits on a lock held by another worker instead of failing; PostgreSQL checks
    pooled connections before use (a restarted server is survived), gives up connecting
    after 10 s instead of hanging, and keeps to the connection budget of `use`
    (`tracking.connections`; the engine made is then given to `budgeted`). `url` may be
    a URL or its drivername."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    pool = pool_options(url, use)
    connect_args = {"connect_timeout": 10, **pool.pop("connect_args", {})}
    return {"pool_pre_ping": True, "connect_args": connect_args, **pool}


def transient_faults_retried(engine: sa.Engine) -> None:
    """A database server's restart or dropped connections are retried for a bounded time
    by `engine` (`tracking.reconnect`); SQLite has no server."""
    if engine.url.get_backend_name() != "sqlite":
        from tracking.reconnect import reconnecting

        reconnecting(engine)


def reached(engine: sa.Engine) -> None:
    """This process reached `engine`'s server: from now on it retries a restart of it."""
    if engine.url.get_backend_name() != "sqlite":
        from tracking.reconnect import mark_reached

        mark_reached(engine.url)


def connect_error(url: str) -> str | None:
    """Why a database server does not take a connection (the driver's first line), or
    None when it does: one try, within `engine_options`' connect timeout."""
    engine = budgeted(sa.create_engine(url, **engine_options(url, Use.PROBE)))
    try:
        with engine.connect():
            reached(engine)
            return None
    except sa.exc.SQLAlchemyError as e:
        return str(getattr(e, "orig", e)).strip().splitlines()[0]
    finally:
        engine.dispose()


def use_wal(engine: sa.Engine) -> None:
    """SQLite in WAL mode with synchronous=NORMAL.

    Every Optuna write is a commit; with the default rollback journal each one fsyncs the
    file, which then costs more than the training it records. WAL + NORMAL survives any
    process crash and loses at most the last commits on power loss, and readers no longer
    block the writer. The MLflow bulk writer (tracking._mlflow_sql) uses it too.
    """
    if engine.url.get_backend_name() != "sqlite":
        return

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # WAL is a property of the file, so only the first connection ever switches it;
            # the switch needs an exclusive lock that the busy timeout does not wait for.
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            pass  # another process holds the file right now; it or a later connection switches
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sa.event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections opened before the listener keep the old settings


def immediate_transactions(engine: sa.Engine) -> None:
    """SQLite transactions take the write lock when they begin (BEGIN IMMEDIATE).

    A deferred transaction that reads and then writes cannot wait for a lock another
    process took in between: SQLite answers "database is locked" at once, busy timeout or
    not. Taking the lock up front makes it wait like any other writer instead. Readers in
    WAL mode are never blocked by it.
    """
    if engine.url.get_backend_name() != "sqlite":
        return

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver emits no BEGIN of its own

    def on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    sa.event.listen(engine, "connect", on_connect)
    sa.event.listen(engine, "begin", on_begin)
    engine.dispose()


def insert_rows(
    conn: sa.Connection,
    table: sa.Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    convert: bool = False,
) -> None:
    """Insert `rows` (tuples in `columns` order) in the connection's transaction, below
    SQLAlchemy: its executemany builds a parameter dict per row, which for thousands of
    rows costs more than the database's insert. The values go to the driver as they are,
    or with `convert` through their columns' types first (what SQLAlchemy would do to a
    datetime or an enum). psycopg sends executemany one row per round trip, so there the
    rows are streamed with COPY."""
    if not rows:
        return
    if convert:
        rows = _converted(conn.dialect, table, columns, rows)
    preparer = conn.dialect.identifier_preparer
    names = ", ".join(preparer.quote(c) for c in columns)
    if conn.dialect.driver == "psycopg":
        sql = f"COPY {preparer.format_table(table)} ({names}) FROM STDIN"
        dbapi_error = conn.dialect.loaded_dbapi.Error
        cursor: Any = conn.connection.cursor()
        try:
            with cursor.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)
        except dbapi_error as e:  # as SQLAlchemy would have wrapped it: IntegrityError, ...
            raise sa.exc.DBAPIError.instance(sql, None, e, dbapi_error, dialect=conn.dialect) from e
        finally:
            cursor.close()
        return
    marks = ", ".join([_mark(conn.dialect)] * len(columns))
    conn.exec_driver_sql(
        f"INSERT INTO {preparer.format_table(table)} ({names}) VALUES ({marks})", rows
    )


def update_rows(
    conn: sa.Connection,
    table: sa.Table,
    columns: Sequence[str],
    key: str,
    rows: Sequence[Sequence[Any]],
    *,
    convert: bool = False,
) -> None:
    """`UPDATE table SET columns WHERE key = ...` once per row (tuples: the new values in
    `columns` order, then the key), below SQLAlchemy as `insert_rows` is."""
    if not rows:
        return
    if convert:
        rows = _converted(conn.dialect, table, [*columns, key], rows)
    quote = conn.dialect.identifier_preparer.quote
    mark = _mark(conn.dialect)
    sets = ", ".join(f"{quote(c)} = {mark}" for c in columns)
    sql = f"UPDATE {conn.dialect.identifier_preparer.format_table(table)} SET {sets} "
    conn.exec_driver_sql(sql + f"WHERE {quote(key)} = {mark}", rows)


def _mark(dialect: sa.Dialect) -> str:
    """The driver's placeholder for one value: sqlite3's `?`, psycopg's and friends' `%s`."""
    return "?" if dialect.paramstyle == "qmark" else "%s"


def _converted(
    dialect: sa.Dialect, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> list[tuple[Any, ...]]:
    processors = [
        (i, process)
        for i, name in enumerate(columns)
        if (process := table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
    ]
    if not processors:
        return [tuple(row) for row in rows]
    converted = []
    for row in rows:
        values = list(row)
        for i, process in processors:
            values[i] = process(values[i])
        converted.append(tuple(values))
    return converted

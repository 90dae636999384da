"""Transient database faults: a server restarting, a connection dropped.

A database server that took this process's connections before and refuses them now (a
restart, a failover, `pg_terminate_backend`) is given a bounded time to come back,
`SWEEPS_DB_RETRY_S` seconds (default 60), before the error is raised: every engine made
through `tracking.db.engine_options` retries its new connections for that long
(`reconnecting`), and `retrying` runs again an operation whose connection dropped under
it. A server this process never reached fails at once (a wrong host or password is not
transient). Each outage is logged once per process and server, through `logging`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

from tracking.errors import TrackingError

RETRY_ENV = "SWEEPS_DB_RETRY_S"
DEFAULT_RETRY_S = 60.0
_FIRST_DELAY_S = 0.1
_MAX_DELAY_S = 2.0

_logger = logging.getLogger(f"sweeps.{__name__}")  # under the package's logger
_T = TypeVar("_T")


def retry_window_s() -> float:
    """How long a transient fault is retried: SWEEPS_DB_RETRY_S seconds (0: never)."""
    raw = os.environ.get(RETRY_ENV)
    if raw is None:
        return DEFAULT_RETRY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise TrackingError(f"{RETRY_ENV} must be a number of seconds >= 0, got {raw!r}")
    return value


class _Servers:
    """Which servers this process reached, and since when it waits for which: one
    deadline per outage, whichever helper meets it first (the outage logged once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answered: set[str] = set()
        self._deadlines: dict[str, float] = {}

    def answered(self, server: str) -> bool:
        with self._lock:
            return server in self._answered

    def up(self, server: str) -> None:
        with self._lock:
            self._answered.add(server)
            back = self._deadlines.pop(server, None) is not None
        if back:
            _logger.info("sweeps: the database server %s answers again", server)

    def down(self, server: str, reason: str) -> float:
        """The monotonic time until which this outage of `server` is retried."""
        with self._lock:
            deadline = self._deadlines.get(server)
            if deadline is not None:
                return deadline
            window = retry_window_s()
            deadline = self._deadlines[server] = time.monotonic() + window
        _logger.warning(
            "sweeps: warning: the database server %s dropped or refused a connection (%s);"
            " retrying for up to %g s (%s)",
            server,
            reason,
            window,
            RETRY_ENV,
        )
        return deadline


# Per process (a forked child inherits what its parent reached): see the module docstring.
_SERVERS = _Servers()


def _server(url: sa.URL) -> str:
    """host:port/database, never the password."""
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def mark_reached(url: sa.URL) -> None:
    """This process reached the server of `url` (a connection not made by `reconnecting`)."""
    _SERVERS.up(_server(url))


def _first_line(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def reconnecting(engine: sa.Engine) -> None:
    """New connections of `engine` to a server this process reached before are retried
    until it answers or the window (`retry_window_s`) has passed."""
    server = _server(engine.url)

    def connect(dialect: sa.Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
        transient = dialect.loaded_dbapi.OperationalError
        delay = _FIRST_DELAY_S
        while True:
            try:
                conn = dialect.connect(*cargs, **cparams)
            except transient as e:
                if not _SERVERS.answered(server):
                    raise
                if time.monotonic() + delay > _SERVERS.down(server, _first_line(e)):
                    raise
                time.sleep(delay)
                delay = min(2 * delay, _MAX_DELAY_S)
            else:
                _SERVERS.up(server)
                return conn

    sa.event.listen(engine, "do_connect", connect)


def dropped(e: BaseException) -> bool:
    """Whether `e` (or what it wraps: Optuna and our stores wrap SQLAlchemy's errors) is a
    connection lost under an operation: the operation may run again on a new one."""
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, sa.exc.DBAPIError) and cause.connection_invalidated:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def retrying(operation: Callable[[], _T], url: sa.URL | str) -> _T:
    """`operation()`, run again while its connection drops under it (a server restarting),
    for up to the retry window. Only for operations that may run twice: reads, and
    writes that do nothing the second time."""
    server = _server(sa.make_url(url))
    delay = _FIRST_DELAY_S
    while True:
        try:
            return operation()
        except Exception as e:
            if not dropped(e):
                raise
            if time.monotonic() + delay > _SERVERS.down(server, _first_line(e)):
                raise
            time.sleep(delay)
            delay = min(2 * delay, _MAX_DELAY_S)

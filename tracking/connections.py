"""The connection budget: how many PostgreSQL connections a sweeps process holds, and the
name each one carries.

A worker (a `sweeps worker` process, its recording process and its heartbeat thread)
holds at most three connections at once, across Optuna's storage, the results tables and
MLflow's store:

1. The storage connection. Optuna's storage, the results tables and the heartbeat thread
   share one engine whose pool holds one connection (`Use.STORAGE`); a beat waits for the
   transaction in hand.
2. and 3. The writer's turn: two more connections, held by one process of the worker at a
   time. The worker takes the turn while it uses MLflow's store (whose own code opens a
   second SQLAlchemy session inside a first one, hence two), its recording process while it writes a
   round (one connection to the storage, one to MLflow). Pools behind the turn
   (`Use.MLFLOW`, and every pool of the recording process) take it before they hand out a
   connection and, once the recording process exists, close their connections before they
   give it back. The turn is a file lock that the worker and its forked recording process
   share (`flock`): the kernel releases it when its holder dies.

The pools cannot grow past these sizes (no overflow): code that would need one more
connection waits for one instead. Every PostgreSQL connection says whose it is:
application_name `sweeps <command> <pid>` (`application_name`), e.g. `sweeps worker
4242` and its recording process `sweeps worker-writer 4250`.

SQLite has no connections to count: its engines keep their own settings.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import os
import tempfile
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import ConnectionPoolEntry, NullPool, QueuePool

# What a pool waits for a connection before it gives up: another thread's transaction (a
# beat behind a long read), never this thread's own, which would wait for itself.
POOL_TIMEOUT_S = 60.0
WRITER_SUFFIX = "-writer"  # a recording process's command: `sweeps worker-writer <pid>`
_NAME_MAX = 63  # PostgreSQL keeps application_name to NAMEDATALEN - 1 bytes


class Use(enum.Enum):
    """What an engine is for, which decides its pool."""

    STORAGE = "storage"  # Optuna's storage and the results tables: one connection
    MLFLOW = "mlflow"  # MLflow's SQL store: two connections, behind the writer's turn
    PROBE = "probe"  # one connection for one question (is the server up?), then closed


_command = "python"  # the CLI says which command runs (`set_command`)
_writer = False  # this process is a recording process: every pool is behind the turn


def set_command(command: str) -> None:
    """Name this process's connections after `command` (the `sweeps` subcommand); for an
    entry point to call, as the CLI does."""
    global _command
    _command = command


def become_writer() -> None:
    """This process is a worker's recording process (forked from it): its connections are
    named `<command>-writer` and every pool it makes waits for the writer's turn."""
    global _writer
    _writer = True


def application_name() -> str:
    """`sweeps <command> <pid>`: what a database administrator sees in pg_stat_activity."""
    command = _command + (WRITER_SUFFIX if _writer else "")
    return f"sweeps {command} {os.getpid()}"[:_NAME_MAX]


def pool_options(url: str, use: Use) -> dict[str, Any]:
    """`create_engine` arguments that keep `use`'s engine within the budget, and name its
    connections (`budgeted` renames them in a forked child): PostgreSQL only, nothing for
    other databases. `url` may be a URL or its drivername."""
    if not url.startswith(("postgresql", "postgres:")):
        return {}
    name = {"application_name": application_name()}
    if use is Use.PROBE and not _writer:
        return {"poolclass": NullPool, "connect_args": name}
    return {
        "poolclass": TurnPool if use is not Use.STORAGE or _writer else QueuePool,
        "pool_size": 2 if use is Use.MLFLOW else 1,
        "max_overflow": 0,
        "pool_timeout": POOL_TIMEOUT_S,
        "connect_args": name,
    }


def budgeted(engine: sa.Engine) -> sa.Engine:
    """`engine` (made with `pool_options`) names its connections and counts for the turn;
    a process forked later drops the connections it inherits (`_after_fork`)."""
    if engine.url.get_backend_name() != "postgresql":
        return engine
    sa.event.listen(engine, "do_connect", _name_connection, insert=True)
    if isinstance(engine.pool, TurnPool):
        sa.event.listen(engine, "checkout", _TURN.checked_out)
        sa.event.listen(engine, "checkin", _TURN.checked_in)
    _ENGINES.add(engine)
    return engine


def _name_connection(_dialect: sa.Dialect, _record: Any, _cargs: Any, cparams: Any) -> None:
    cparams["application_name"] = application_name()


@contextlib.contextmanager
def turn() -> Iterator[None]:
    """Hold the writer's turn for the block: the connections behind it that the block opens
    stay open until it ends (one connection a store for a whole round), and the other
    process of the worker waits. A process that holds it may take it again."""
    _TURN.enter()
    try:
        yield
    finally:
        _TURN.leave()


def release_idle() -> None:
    """Close the connections this process keeps behind the writer's turn between uses, if
    it holds none now: before it opens others (a process without a recording process
    keeps them, see `TurnPool`)."""
    with _TURN.lock():
        if _TURN.idle_only():
            _TURN.close_idle()


class TurnPool(QueuePool):
    """A pool whose connections are used only while this process holds the writer's turn:
    taken before a connection is handed out, given back when the process's last one comes
    back and no `turn` block is open. Once another process shares the turn (a recording
    process forked), the connections are closed then too, so that they exist only while
    the turn is held; until then they wait in the pool for the next use."""

    def connect(self) -> Any:
        _TURN.enter()  # the checkout then counts (`checked_out`) until it comes back
        try:
            return super().connect()
        finally:
            _TURN.leave()


class _Turn:
    """This process's side of the writer's turn (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # a collected connection may come back in any thread
        self._holds = 0  # turn blocks, connections being handed out, connections out
        self._idle: list[ConnectionPoolEntry] = []  # back in their pools, still connected
        self._fd: int | None = None  # the lock file, shared by a worker and its writer
        # Whether another process shares the turn (this one forked, or was forked): only
        # then are the connections behind it closed each time it is given back.
        self._shared = False

    def enter(self) -> None:
        with self._lock:
            if self._holds == 0:
                fcntl.flock(self._file(), fcntl.LOCK_EX)
            self._holds += 1

    def leave(self) -> None:
        with self._lock:
            self._holds -= 1
            if self._holds == 0:
                self._give_back()

    def checked_out(self, _conn: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        with self._lock:
            record.info["sweeps.turn"] = True
            if record in self._idle:
                self._idle.remove(record)
            self._holds += 1

    def checked_in(self, _conn: Any, record: ConnectionPoolEntry) -> None:
        with self._lock:
            if not record.info.pop("sweeps.turn", False):
                return  # a failed checkout: never counted
            self._idle.append(record)
            self._holds -= 1
            if self._holds == 0:
                self._give_back()

    def lock(self) -> threading.RLock:
        return self._lock

    def idle_only(self) -> bool:
        """Whether this process holds no connection behind the turn, nor the turn."""
        return self._holds == 0

    def _give_back(self) -> None:
        try:
            if self._shared:
                self.close_idle()
        finally:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close_idle(self) -> None:
        idle, self._idle = self._idle, []
        for record in idle:
            if record.dbapi_connection is not None:  # None: invalidated, closed already
                record.close()  # reconnects, behind the turn, when next handed out

    def _file(self) -> int:
        if self._fd is None:
            self._fd = _lock_file()
        return self._fd

    def before_fork(self) -> None:
        """The child shares the turn: it must find the lock file made, and the connections
        this process keeps behind the turn closed (the child may take it next)."""
        with self._lock:
            self._shared = True
            if self._holds == 0:
                self.close_idle()
            with contextlib.suppress(OSError):  # no temporary directory: no child to share
                self._file()

    def after_fork(self) -> None:
        """The child holds nothing: its own open of the parent's lock file (flock locks
        belong to an open file, which a fork shares), none of the parent's connections."""
        self._lock = threading.RLock()
        self._holds = 0
        self._idle = []
        self._shared = True
        if self._fd is not None:
            inherited, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                self._fd = os.open(f"/proc/self/fd/{inherited}", os.O_RDWR | os.O_CLOEXEC)
            os.close(inherited)


def _lock_file() -> int:
    """A new, nameless file to lock (removed by the system once nobody has it open)."""
    fd, path = tempfile.mkstemp(prefix="sweeps-turn-")
    os.unlink(path)
    os.set_inheritable(fd, False)  # a fork shares it; an exec'd child has no use for it
    return fd


_TURN = _Turn()
_ENGINES: weakref.WeakSet[sa.Engine] = weakref.WeakSet()  # this process's budgeted engines


def _after_fork() -> None:
    """In a forked child: drop (without closing: they are the parent's) the connections
    the engines hold, so that the child opens its own."""
    _TURN.after_fork()
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(before=_TURN.before_fork, after_in_child=_after_fork)

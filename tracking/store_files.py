"""Up-front checks of the SQLite files a command will open, so that a damaged, foreign or
unwritable store is one line naming the file and what is wrong with it, before anything is
written — instead of a traceback (or minutes of retries) halfway through a study.

Checked without SQLAlchemy or MLflow, read-only, in about a millisecond:
  - the header (an SQLite file starts with `SQLite format 3\\0`; a zero-byte file is an
    empty database, which SQLite itself accepts);
  - truncation (the page count the header declares must fit in the file, unless a WAL file
    holds the rest);
  - the schema is readable and is the expected program's (or empty): Optuna's and sweeps'
    tables for the study storage, MLflow's for the tracking store;
  - for commands that write: the file and its directory are writable.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

from tracking.errors import StoreFileError

HEADER = b"SQLite format 3\x00"
# Tables that say whose a database is: one is enough (older versions lack some).
OWNERS = {
    "sweeps": frozenset({"studies", "trials", "version_info", "sweeps_studies", "sweeps_trials"}),
    "mlflow": frozenset({"experiments", "runs", "metrics", "tags"}),
}
# Tables any owner may have beside its own.
SHARED = frozenset({"alembic_version", "sweeps_alembic_version"})


def check_store_file(path: Path, owner: str, *, write: bool = False) -> None:
    """Raise StoreFileError (one line) unless `path` can serve as `owner`'s SQLite store:
    absent (it will be created), or a readable SQLite database of `owner` or empty."""
    what = {"sweeps": "the sweeps storage", "mlflow": "the MLflow store"}[owner]
    if write:
        _check_writable(path, what)
    if not path.exists() or path.stat().st_size == 0:
        return
    if path.is_dir():
        raise StoreFileError(f"{what} {path} is a directory, not an SQLite file")
    if not _open_here(path):
        _check_header(path, what)
    tables = _tables(path, what)
    foreign = tables - OWNERS[owner] - SHARED
    if tables and not tables & OWNERS[owner]:
        shown = ", ".join(sorted(foreign)[:4])
        raise StoreFileError(f"{what} {path} holds another program's tables ({shown})")


def _open_here(path: Path) -> bool:
    """Whether this process holds `path` open already (a connection an earlier call of
    the Python API pooled, MLflow's cached engine): then it is read through SQLite only.
    Closing a descriptor opened outside SQLite would drop that connection's locks (a POSIX
    lock belongs to the process and the file, whichever descriptor took it), and another
    process closing the database would then delete its write-ahead log under it."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return False
    target = os.path.realpath(path)
    for fd in os.listdir(fds):
        try:
            if os.readlink(fds / fd) == target:
                return True
        except OSError:  # closed meanwhile
            continue
    return False


def _check_header(path: Path, what: str) -> None:
    """An SQLite header, and as many pages as it declares (or a WAL file with the rest)."""
    try:
        with path.open("rb") as f:
            head = f.read(100)
    except OSError as e:
        raise StoreFileError(f"{what} {path} cannot be read: {e.strerror}") from None
    if not head.startswith(HEADER) or len(head) < 100:
        raise StoreFileError(f"{what} {path} is not an SQLite database (its header is not)")
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    wal = path.with_name(path.name + "-wal")
    if pages * page_size > path.stat().st_size and not (wal.exists() and wal.stat().st_size):
        raise StoreFileError(
            f"{what} {path} is truncated ({path.stat().st_size} of {pages * page_size} bytes)"
        )


def _tables(path: Path, what: str) -> set[str]:
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as e:
        raise StoreFileError(f"{what} {path} cannot be opened: {e}") from None
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.DatabaseError as e:
        cannot_open = e.sqlite_errorcode == sqlite3.SQLITE_CANTOPEN
        if cannot_open and not os.access(path.parent, os.W_OK):  # a WAL read needs its -shm
            raise StoreFileError(
                f"{what} {path} is read-only: SQLite cannot make its -shm file in"
                f" {path.parent} ({e})"
            ) from None
        raise StoreFileError(f"{what} {path} is damaged: {e}") from None
    finally:
        conn.close()
    return {str(name) for (name,) in rows if not str(name).startswith("sqlite_")}


def _check_writable(path: Path, what: str) -> None:
    """The file (if any) and the directory it is in (SQLite writes its journal there) are
    writable."""
    if path.exists() and not os.access(path, os.W_OK):
        raise StoreFileError(f"{what} {path} is read-only")
    check_writable_dir(path.parent, f"{what} {path}: its directory")


def check_writable_dir(directory: Path, what: str) -> None:
    """`directory` can be written, or created (its nearest existing parent can be)."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise StoreFileError(f"{what} {directory} is not writable ({existing})")
    try:  # a file system that holds no files (/proc), which access() does not tell
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise StoreFileError(
            f"{what} {directory} is not writable ({existing}: {e.strerror})"
        ) from None


def holds_tables(url: str, owner: str) -> bool:
    """Whether the database at `url` holds `owner`'s tables, found without creating it: an
    SQLite file that does not exist, or is empty, is not opened (opening one would write),
    and a server's database is only inspected. A URL that is not a database (an MLflow
    server's http://) is taken to hold them."""
    import sqlalchemy as sa

    from tracking.connections import Use, budgeted
    from tracking.db import engine_options

    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return True
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        return True
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        if not path.is_file() or path.stat().st_size == 0:
            return False
    engine = budgeted(sa.create_engine(url, **engine_options(url, Use.PROBE)))
    try:
        with engine.connect() as conn:
            return bool(set(sa.inspect(conn).get_table_names()) & OWNERS[owner])
    except sa.exc.SQLAlchemyError as e:
        reason = str(getattr(e, "orig", e)).strip().splitlines()[0]
        raise StoreFileError(f"cannot read the {owner} store: {reason}") from None
    finally:
        engine.dispose()

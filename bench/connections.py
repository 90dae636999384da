"""PostgreSQL connections as the server sees them: `pg_stat_activity` sampled in a thread
while something runs, each connection put to the sweeps process that holds it by its
application_name (`sweeps <command> <pid>`, `tracking.connections`), a recording
process's (`<command>-writer`) to its parent's: the worker and its recording process are
one group, whose connections the budget counts together."""

from __future__ import annotations

import os
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import sqlalchemy as sa

from tracking.connections import WRITER_SUFFIX

_NAME = re.compile(r"^sweeps (\S+) (\d+)$")
INTERVAL_S = 0.02


@dataclass
class Peaks:
    """The most connections seen at once, in all, per database and per group ("worker
    1234": the process named so, with its recording process); `unnamed` counts samples
    with a connection whose name is not a sweeps one."""

    total: int = 0
    databases: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    writers: int = 0  # the most recording-process connections seen at once
    unnamed: int = 0
    samples: int = 0
    # Per database: samples × connections running a statement, and waiting for a lock
    # (divided by `samples`: the mean number busy); the server's CPU seconds for it (its
    # backends', read from /proc: the server must run on this machine).
    active: dict[str, int] = field(default_factory=dict)
    lock_waits: dict[str, int] = field(default_factory=dict)
    backend_cpu_s: dict[str, float] = field(default_factory=dict)
    # While a worker is connected: how many samples, and in how many of them each other
    # group (a launcher, "run 1234") held a connection.
    working_samples: int = 0
    held_while_working: dict[str, int] = field(default_factory=dict)

    def workers(self) -> dict[str, int]:
        """The groups of `sweeps worker` processes."""
        return {g: n for g, n in self.groups.items() if g.startswith("worker ")}

    def launchers(self) -> dict[str, float]:
        """Each `sweeps run` group: the share of the samples taken while workers were
        connected in which it held a connection too."""
        return {
            g: n / max(self.working_samples, 1)
            for g, n in self.held_while_working.items()
            if g.startswith("run ")
        }


class Sampler:
    """Samples `databases`' connections through `admin_url` (a database not among them)
    until the block ends. Run it on the machine of the sweeps processes: a recording
    process's group is found from its parent's pid in /proc."""

    def __init__(
        self, admin_url: str, databases: Sequence[str], interval_s: float = INTERVAL_S
    ) -> None:
        self._engine = sa.create_engine(admin_url, poolclass=sa.pool.NullPool)
        self._databases = list(databases)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-activity", daemon=True)
        self._parents: dict[int, int | None] = {}
        self._cpu: dict[int, tuple[str, float]] = {}  # backend pid: its database, CPU s
        self._error: BaseException | None = None
        self.peaks = Peaks()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._engine.dispose()
        if self._error is not None and kind is None:
            raise self._error

    def _run(self) -> None:
        query = sa.text(
            "SELECT datname, application_name, pid, state, wait_event_type"
            " FROM pg_stat_activity WHERE datname = ANY(:names) AND pid <> pg_backend_pid()"
        )
        try:
            with self._engine.connect() as conn:
                while not self._stop.is_set():
                    rows = conn.execute(query, {"names": self._databases}).all()
                    conn.rollback()  # a fresh snapshot of the statistics next time
                    self._count([_Row(str(r[0]), str(r[1] or ""), *r[2:]) for r in rows])
                    self._stop.wait(self._interval_s)
        except BaseException as e:  # raised in the caller's thread by __exit__
            self._error = e

    def _count(self, rows: list[_Row]) -> None:
        peaks = self.peaks
        peaks.samples += 1
        peaks.total = max(peaks.total, len(rows))
        _raise(peaks.databases, Counter(row.db for row in rows))
        for row in rows:
            if row.state == "active":
                peaks.active[row.db] = peaks.active.get(row.db, 0) + 1
            if row.wait == "Lock":
                peaks.lock_waits[row.db] = peaks.lock_waits.get(row.db, 0) + 1
            self._cpu[row.pid] = (row.db, _cpu_s(row.pid) or self._cpu.get(row.pid, ("", 0.0))[1])
        peaks.backend_cpu_s = {}
        for db, seconds in self._cpu.values():
            peaks.backend_cpu_s[db] = peaks.backend_cpu_s.get(db, 0.0) + seconds
        groups: Counter[str] = Counter()
        writers = 0
        for row in rows:
            found = _NAME.match(row.name)
            if found is None:
                peaks.unnamed += 1
                continue
            command, pid = found.group(1), int(found.group(2))
            if command.endswith(WRITER_SUFFIX):
                writers += 1
                command = command.removesuffix(WRITER_SUFFIX)
                pid = self._parent(pid) or pid
            groups[f"{command} {pid}"] += 1
        peaks.writers = max(peaks.writers, writers)
        _raise(peaks.groups, groups)
        if any(g.startswith("worker ") for g in groups):
            peaks.working_samples += 1
            for g in groups:
                if not g.startswith("worker "):
                    peaks.held_while_working[g] = peaks.held_while_working.get(g, 0) + 1

    def _parent(self, pid: int) -> int | None:
        """A recording process's parent (its worker), read once while it lives."""
        if pid not in self._parents:
            self._parents[pid] = _parent_of(pid)
        return self._parents[pid]


@dataclass(frozen=True)
class _Row:
    """One connection in one sample."""

    db: str
    name: str
    pid: int
    state: str | None
    wait: str | None


_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float | None:
    """A process's CPU seconds so far (user + system), None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _raise(peaks: dict[str, int], counts: Counter[str]) -> None:
    for key, count in counts.items():
        peaks[key] = max(peaks.get(key, 0), count)

"""Heartbeats for the trials in flight: the storage's beat (`Heartbeat`) and the one thread
that beats for a study loop's trials (`Beats`).

A RUNNING trial whose worker stopped beating for the grace period is failed by another
worker and retried (`sweeps.storage`); the loop's trials beat from when they are asked
until they are told.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import optuna
import sqlalchemy as sa

from sweeps._optuna import fenced, storage_of

if TYPE_CHECKING:
    from sweeps._optuna.beat import BulkHeartbeat

_logger = logging.getLogger("sweeps")


@dataclass(frozen=True)
class Heartbeat:
    """The storage's heartbeat: its interval, and a beat for many trials at once."""

    interval: float
    beat: Callable[[Sequence[int]], None]

    @classmethod
    def of(cls, study: optuna.Study) -> Heartbeat | None:
        """None when the storage has no heartbeat."""
        storage = storage_of(study)
        interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
        record: Callable[[int], None] | None = getattr(storage, "record_heartbeat", None)
        if interval is None or record is None:
            return None
        bulk = fenced(study, "beating for a round's trials", _bulk_heartbeat)
        if bulk is not None:
            return cls(float(interval), bulk.beat)

        def each(trial_ids: Sequence[int]) -> None:
            for trial_id in trial_ids:
                record(trial_id)

        return cls(float(interval), each)


class Beats:
    """One thread beating, every heartbeat interval, for the trials in flight: the round
    training and the round being written, from when they are asked (`watch`) until they
    are told (`forget`). One thread for the whole loop rather than one a round: starting
    and joining a thread, and the beat it owes at once, would be paid every round.
    """

    def __init__(self, heartbeat: Heartbeat) -> None:
        self._heartbeat = heartbeat
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None

    def watch(self, trial_ids: Iterable[int], beaten: bool) -> None:
        """Beat for these trials from now on: at once, unless they were `beaten` as they
        were created (then within an interval)."""
        with self._lock:
            self._ids.update(trial_ids)
        if not beaten:
            self._wake.set()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sweeps-heartbeat", daemon=True)
            self._thread.start()

    def forget(self, trial_ids: Iterable[int]) -> None:
        """Told trials need no more beats."""
        with self._lock:
            self._ids.difference_update(trial_ids)

    def close(self) -> None:
        """Stop beating (the loop ended); a later `watch` starts again."""
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._closing = False
        self._wake.clear()
        with self._lock:
            self._ids.clear()

    def _run(self) -> None:
        failing = False  # a beat failed since the last one that went through
        while True:
            self._wake.wait(self._heartbeat.interval)
            self._wake.clear()
            if self._closing:
                return
            with self._lock:
                ids = sorted(self._ids)
            if not ids:
                continue
            try:
                self._heartbeat.beat(ids)
            except Exception as e:  # a lost beat or two is survivable; a dead thread is not
                if not failing:  # one line until a beat goes through again, not one a beat
                    _logger.warning("sweeps: a heartbeat failed (retried next interval): %s", e)
                failing = True
            else:
                failing = False


def _bulk_heartbeat(engine: sa.Engine) -> BulkHeartbeat:
    from sweeps._optuna.beat import BulkHeartbeat

    return BulkHeartbeat(engine)

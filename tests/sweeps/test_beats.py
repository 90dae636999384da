"""The study loop's heartbeat thread (`sweeps.heartbeats.Beats`): one thread beats for the
trials in flight, from when they are asked until they are told. Each step waits on the
beats themselves, never on a clock: the interval is an hour, so every beat seen here is
one the thread owed at once."""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence

import pytest

from sweeps.heartbeats import Beats, Heartbeat

HOUR = 3600.0
WAIT = 60.0  # generous: a beat that never comes fails the test, a slow one does not


class _Recorded:
    def __init__(self, fail_first: bool = False) -> None:
        self.beats: queue.Queue[list[int]] = queue.Queue()
        self.failed = threading.Event()
        self._fail = fail_first

    def beat(self, trial_ids: Sequence[int]) -> None:
        if self._fail:
            self._fail = False
            self.failed.set()
            raise RuntimeError("database is locked")
        self.beats.put(list(trial_ids))


def test_unbeaten_trials_are_beaten_at_once_until_told() -> None:
    seen = _Recorded()
    beats = Beats(Heartbeat(HOUR, seen.beat))
    try:
        beats.watch([3, 1], beaten=False)
        assert seen.beats.get(timeout=WAIT) == [1, 3]
        beats.watch([7], beaten=False)  # the next round, while [1, 3] are being written
        assert seen.beats.get(timeout=WAIT) == [1, 3, 7]
        beats.forget([1, 3])  # told
        beats.watch([], beaten=False)
        assert seen.beats.get(timeout=WAIT) == [7]
    finally:
        beats.close()
    assert seen.beats.empty()


def test_trials_beaten_as_they_were_created_wait_an_interval() -> None:
    seen = _Recorded()
    beats = Beats(Heartbeat(HOUR, seen.beat))
    beats.watch([1, 2], beaten=True)
    beats.close()  # within the hour: nothing was owed
    assert seen.beats.empty()


def test_a_failed_beat_leaves_the_thread_beating(caplog: pytest.LogCaptureFixture) -> None:
    seen = _Recorded(fail_first=True)
    beats = Beats(Heartbeat(HOUR, seen.beat))
    try:
        beats.watch([5], beaten=False)  # this beat fails
        assert seen.failed.wait(WAIT)
        beats.watch([], beaten=False)
        assert seen.beats.get(timeout=WAIT) == [5]
    finally:
        beats.close()
    assert "a heartbeat failed" in caplog.text


def test_beating_starts_again_after_a_close() -> None:
    """A study loop run twice (`RoundOptimizer.optimize`) beats both times."""
    seen = _Recorded()
    beats = Beats(Heartbeat(HOUR, seen.beat))
    beats.watch([1], beaten=False)
    assert seen.beats.get(timeout=WAIT) == [1]
    beats.close()
    try:
        beats.watch([2], beaten=False)  # the first loop's trials were forgotten with it
        assert seen.beats.get(timeout=WAIT) == [2]
    finally:
        beats.close()

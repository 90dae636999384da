"""Named points of a trial's life where a test may kill this process for real (SIGKILL).

`SWEEPS_KILL_AT=<point>[:<n>]` kills the process the n-th time (default: the first) it
passes `<point>`. The crash-consistency test (tests/sweeps/test_crashes.py) kills workers
between the writes of a round this way, which no outside signal can time; the gate task
(tests/gate.py) holds trials in training for the kills that need no exact point. Unset, a
point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "SWEEPS_KILL_AT"
# In the order a round passes them (sweeps.lifecycle, sweeps.recording).
POINTS = (
    "asked",  # the round's trials are created, RUNNING
    "trained",  # trained and concluded, nothing recorded
    "logged",  # MLflow runs written, no results rows
    "recorded",  # results rows written too, Optuna not told
    "told",  # Optuna told: the round is done
)
_passed: dict[str, int] = {}


def passing(point: str) -> None:
    """Kill this process here if SWEEPS_KILL_AT names this point and pass."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition(":")
    if name != point:
        return
    _passed[point] = _passed.get(point, 0) + 1
    if _passed[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)

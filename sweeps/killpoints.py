"""Named points of a trial's life where a test may kill (SIGKILL) or pause (SIGSTOP) this
process for real.

`SWEEPS_KILL_AT=<point>[:<n>]` kills the process the n-th time (default: the first) it
passes `<point>`; `SWEEPS_STOP_AT=<point>[:<n>]` stops it there, until a SIGCONT. The
crash-consistency test (tests/sweeps/test_crashes.py) kills workers between the writes of a
round this way, which no outside signal can time, and the fencing test
(tests/sweeps/test_fencing.py) pauses one between the fence's checks; the gate task
(tests/gate.py) holds trials in training for the kills that need no exact point. Unset, a
point costs two environment lookups.
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
STOP_ENV = "SWEEPS_STOP_AT"
# Where only a pause tells something a kill does not (a kill there is one at "trained").
OWNED = "owned"  # the fence found the round's trials still this worker's; nothing logged
# At a study's end: what the best trials' curves miss is read, nothing of it written yet.
CURVES_READ = "curves_read"
_passed: dict[tuple[str, str], int] = {}


def passing(point: str) -> None:
    """Kill or stop this process here if SWEEPS_KILL_AT or SWEEPS_STOP_AT names this point
    and pass."""
    for env, sig in ((ENV, signal.SIGKILL), (STOP_ENV, signal.SIGSTOP)):
        wanted = os.environ.get(env)
        if not wanted:
            continue
        name, _, nth = wanted.partition(":")
        if name != point:
            continue
        _passed[env, point] = _passed.get((env, point), 0) + 1
        if _passed[env, point] == int(nth or 1):
            os.kill(os.getpid(), sig)

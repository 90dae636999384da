"""The recording process: a forked child that writes each round while the study process
asks and trains the next.

On the CPU a tracked round's writes can cost more than training it, and two cores are
common; a thread would hold the same interpreter lock as training. The child is forked (the
imports are already paid) before any round's heartbeat thread runs, opens its own database
connections (one must not cross a fork), and dies with its parent (PR_SET_PDEATHSIG), so a
killed worker is killed whole and never leaves a writer behind to race a resume's healing.
It writes each round as the study process would (`sweeps.telling.write_round`): MLflow
runs, results rows, then Optuna's tell of the rows the study process decided. Linux only;
`SWEEPS_RECORDING_PROCESS=0` turns it off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sweeps import orphans
from sweeps.errors import SweepsError, mask_secrets
from sweeps.records import serialize_weights
from sweeps.telling import RoundWritten, write_round
from tracking import connections
from tracking.records import TrialRecord

if TYPE_CHECKING:
    import sqlalchemy as sa

    from sweeps._optuna.tell import BulkTeller, TellRow
    from sweeps.recording import Recorder

RECORDING_ENV = "SWEEPS_RECORDING_PROCESS"  # "0": record every round in the study process


class RecordingLost(SweepsError):
    """The recording process died (killed, out of memory): the rounds it had not finished
    stay RUNNING in Optuna, and a resume heals and retries them."""

    exit_code = 1


class RecordingFailed(SweepsError):
    """Writing a round failed in the recording process (as the write would have raised in
    the study process)."""


class RecordingProcess:
    """The study process's end of the recording process (see above)."""

    def __init__(self, process: Any, conn: Any) -> None:
        self._process = process
        self._conn = conn

    @classmethod
    def start(cls, recorder: Recorder) -> RecordingProcess | None:
        """A child writing `recorder`'s rounds; None where the child could not die with
        us, or where `recorder` cannot write from a fork (`Recorder.forkable`)."""
        if os.environ.get(RECORDING_ENV) == "0" or not sys.platform.startswith("linux"):
            return None
        if orphans.prctl() is None or not recorder.forkable():
            return None
        import multiprocessing

        context = multiprocessing.get_context("fork")
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_serve,
            args=(recorder, theirs, ours, os.getpid()),
            name="sweeps-recording",
            daemon=True,
        )
        sys.stderr.flush()  # nothing buffered may be written twice
        process.start()
        theirs.close()
        return cls(process, ours)

    def submit(
        self,
        recs: list[TrialRecord],
        weights: Sequence[Mapping[str, Any] | None],
        tell: Sequence[TellRow],
    ) -> None:
        """Start writing `recs`, each with its `weights` (a state_dict, serialized there),
        then telling Optuna `tell`; `result` waits for it."""
        # As numpy arrays: a tensor pickles many times slower.
        arrays = [None if w is None else {k: _array(v) for k, v in w.items()} for w in weights]
        try:
            self._conn.send((recs, arrays, tell))
        except OSError as e:
            raise self._lost() from e

    def result(self) -> RoundWritten:
        """What the submitted round's writes wrote, once done."""
        try:
            while not self._conn.poll(0.2):
                if not self._process.is_alive():
                    raise self._lost()
            kind, payload = self._conn.recv()
        except (EOFError, OSError) as e:
            raise self._lost() from e
        if kind == "error":
            raise RecordingFailed(payload)
        written: RoundWritten = payload
        return written

    def close(self) -> None:
        """Let the child finish what it has and exit."""
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self._process.join(timeout=60)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()

    def _lost(self) -> RecordingLost:
        self._process.join(timeout=5)
        code = self._process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
        return RecordingLost(
            f"the recording process died ({how}); the trials it was writing stay RUNNING "
            "and a resume retries them"
        )


def _serve(recorder: Recorder, conn: Any, parents: Any, parent_pid: int) -> None:
    """The recording process: write each round received, answer what it wrote."""
    parents.close()
    call = orphans.prctl()
    if call is None or not orphans.die_with_parent(call, signal.SIGKILL, parent_pid):
        return
    # A stop sent to the whole process group (Ctrl-C; SIGTERM from `scancel` or a
    # preemption) is the parent's to handle: it records the interrupted round and tells
    # this process to finish, so the writes in hand are not cut short.
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, signal.SIG_IGN)
    connections.become_writer()
    writer = recorder.reopened()
    teller = _teller(writer.results.engine)
    try:
        while (message := conn.recv()) is not None:
            recs, weights, rows = message
            try:
                recs = [
                    rec if w is None else dataclasses.replace(rec, weights=_serialized(w))
                    for rec, w in zip(recs, weights, strict=True)
                ]
                with connections.turn():  # the round's connections, then none
                    written = write_round(writer.write, teller, recs, rows)
            except Exception as e:
                conn.send(("error", mask_secrets(f"{type(e).__name__}: {e}")))
            else:
                conn.send(("ok", written))
    except EOFError:
        pass
    finally:
        writer.close()
        teller.close()


def _teller(engine: sa.Engine) -> BulkTeller:
    """The recording process's teller, on its results store's engine: one connection to
    the database (the study process checked Optuna's schema before it started this one)."""
    from sweeps._optuna.tell import BulkTeller

    # The results store's engine settings are what the same database needs here: the tell
    # reads which trials are still RUNNING, then writes, so on SQLite it must hold the
    # write lock from the start (immediate transactions), or the study process's writes
    # in between fail it.
    return BulkTeller(engine)


def _array(tensor: Any) -> Any:
    """A CPU tensor as a numpy array; one numpy has no dtype for (bfloat16) stays."""
    try:
        return tensor.detach().cpu().numpy()
    except TypeError:
        return tensor


def _serialized(arrays: Mapping[str, Any]) -> bytes:
    import numpy as np
    import torch

    return serialize_weights(
        {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in arrays.items()}
    )

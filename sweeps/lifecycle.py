"""A study's trials, round by round: asked, trained, concluded, recorded, told.

A study's trials run in rounds of K (`--batch K`, else 1), through Optuna's ask-and-tell
interface rather than `study.optimize`, for what optimize does not allow: K trials in
flight at once, asked from one model and written in bulk. What optimize does per trial is
done per round: stale trials of dead workers are failed (and retried) first, a thread
beats for the round's trials (`sweeps.heartbeats`), the timeout is checked, an exhausted
grid stops the loop.

1. Ask (`sweeps.asking`): K trials, planned from one model of the finished trials this
   process knows and created in one transaction where the storage allows.
2. Train (`sweeps.training`): one after another for a round of one, else as one stacked
   model; checkpoints report to the pruner (`sweeps.checkpoints`). A trial identical to a
   finished one takes its result instead (`sweeps.reuse`).
3. Conclude (`_conclude`, `sweeps.records`). Each trial's end state and its record, the
   repeats averaged epoch by epoch:
     - a training error → FAIL with the error message; the study goes on;
     - divergence (non-finite loss) → PRUNED, tagged `diverged`, so TPE learns to avoid
       the region (it ignores FAIL trials but ranks pruned ones as worst);
     - pruning → PRUNED with the history so far;
     - Ctrl-C → FAIL ("interrupted"), recorded, then the interrupt propagates.
4. Record and tell (`_finish`, `sweeps.telling`): the round's MLflow runs and results rows
   in bulk (`RoundRecorder.write`), then Optuna learns the round's states and values in one
   transaction. A study of several rounds hands each round to a recording process
   (`sweeps.recording_process`), which writes it while the next round trains; the next
   round is planned with its results as they will be told (`KnownTrials.previews`).

Either way each trial is its own Optuna trial, MLflow child run and results row. Where
the storage is not a tested RDB schema (or SWEEPS_OPTUNA_PUBLIC=1), every step takes
Optuna's public API instead, with the same rows as the result.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import optuna
import torch
from optuna.trial import FrozenTrial

from sweeps import killpoints
from sweeps._optuna import trial_ids
from sweeps.asking import Asked, KnownTrials, RoundAsker, fenced_for
from sweeps.checkpoints import Checkpoints
from sweeps.config import PrunerKind, SweepConfig
from sweeps.errors import SweepsError
from sweeps.fencing import lost_message
from sweeps.heartbeats import Beats, Heartbeat
from sweeps.pruning import PruningView, Reports
from sweeps.recording import warn
from sweeps.records import build_record, conclude
from sweeps.reuse import Reusable
from sweeps.telling import (
    INTERRUPTED,
    Decided,
    Provenance,
    bulk_teller,
    decide,
    learn,
    tell_public,
    write_round,
)
from sweeps.training import RoundTraining, Slot
from tracking.records import TrialRecord, TrialState
from trainer import Task, TrialResult

if TYPE_CHECKING:
    from sweeps._optuna.tell import BulkTeller
    from sweeps.progress import Progress
    from sweeps.recording_process import RecordingProcess
    from sweeps.telling import RoundWritten

SAME_FAILURES = 3  # rounds in a row failing with one error stop the study


class StudyStopped(SweepsError):
    """Rounds kept failing with the same error; the study stops (exit 2, one line)."""


class RoundRecorder(Protocol):
    """Where the loop's rounds are recorded (`sweeps.recording.Recorder`)."""

    @property
    def tracked(self) -> bool:
        """Whether records carry what only MLflow keeps: each trial's serialized weights
        and per-epoch history (False: the records need their final values only)."""
        ...

    def write(self, recs: list[TrialRecord]) -> list[TrialRecord]:
        """The round's MLflow runs and results rows; returns the records written (the
        trials this worker still owns), with their runs."""
        ...

    def show_best(self, recs: list[TrialRecord]) -> None:
        """Written records (the parent run shows the best trial as it improves)."""
        ...

    def start_writer(self) -> RecordingProcess | None:
        """A process that writes each round while the next one trains, or None."""
        ...

    def draw_ahead(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        """Called once while the last round is written, with every finished trial as it
        will be when that round is told (the parent run's figures)."""
        ...


@dataclass
class RoundOptimizer:
    """Runs `n_trials` trials of `study` in rounds of `sweep.batch` (see above)."""

    study: optuna.Study
    sweep: SweepConfig
    task: Task
    device: torch.device
    device_label: str
    recorder: RoundRecorder
    progress: Progress | None = None  # shown each trial as it is told
    origin: Provenance = field(default_factory=Provenance)  # kept on each trial it tells
    reused: int = 0  # trials that took an identical earlier trial's result (`sweeps.reuse`)
    lost: list[int] = field(default_factory=list)  # trials another worker took over
    _free_reused: int = 0  # of the reused, those not counted toward `optimize`'s n_trials
    _failed_rounds: list[str] = field(default_factory=list)  # errors of the rounds in a row
    _writing: RecordingProcess | None = None  # the recording process, when overlapping
    _pending: Decided | None = None  # the round it is writing
    _stale_checked: float | None = None  # when `_fail_stale` last looked (monotonic)
    _weights: dict[int, Mapping[str, torch.Tensor]] = field(default_factory=dict)  # for it

    def __post_init__(self) -> None:
        # Trials are suggested from the base config on this device (not one replace each).
        base = self.sweep.base.replace(device=self.device_label)
        space = dataclasses.replace(self.sweep, base=base)
        self._heartbeat = Heartbeat.of(self.study)
        self._beats = None if self._heartbeat is None else Beats(self._heartbeat)
        self._known = KnownTrials.of(self.study)
        self._asker = RoundAsker(self.study, space, self._heartbeat, self._known)
        self._teller: BulkTeller | None = fenced_for(
            self.study, "telling a round's trials", bulk_teller
        )
        self._reports = Reports.of(self.study)
        # Reports exist for the pruner: without one, no checkpoint reads or writes anything.
        reporting = self.sweep.pruner is not PrunerKind.NONE
        self._training = RoundTraining(
            self.task,
            self.device,
            self.sweep.repeats,
            self.sweep.checkpoint_every,
            self._reports if reporting else None,
        )
        self._reusable = Reusable(self.sweep.study, self.origin.data_version, self.device_label)

    def optimize(self, n_trials: int) -> None:
        deadline = None if self.sweep.timeout is None else time.monotonic() + self.sweep.timeout
        done = 0
        self._free_reused = 0
        if self._overlapping(n_trials):
            self._writing = self.recorder.start_writer()
        try:
            while done < n_trials and (deadline is None or time.monotonic() < deadline):
                k = min(self.sweep.batch, n_trials - done)
                k = min(k, self._asker.grid_left(self.sweep.batch))
                if k <= 0:
                    break  # the grid sampler ran every point
                self._fail_stale()
                completed = None if self._known is None else self._known.completed
                pruning = PruningView(self.study, completed)
                slots, beaten = self._ask_round(k, pruning)
                if not slots:
                    break  # every point of the grid is taken
                killpoints.passing("asked")
                if self._beats is not None:
                    self._beats.watch(trial_ids([s.trial for s in slots]), beaten)
                reused_before = self.reused
                self._round(slots, pruning)
                done += len(slots) - self._free_reuses(self.reused - reused_before, n_trials)
            if self._pending is not None and self._known is not None:
                self.recorder.draw_ahead(self.study, self._known.finished())
        finally:
            self._close()

    def _close(self) -> None:
        """The round being written is told and the recording process ends; no more beats."""
        try:
            if self._writing is not None:
                self._settle()
                self._writing.close()
                self._writing = None
        finally:
            if self._beats is not None:
                self._beats.close()

    def _free_reuses(self, reused: int, n_trials: int) -> int:
        """How many of a round's `reused` trials do not count toward `n_trials`: a
        repeated proposal of a finished configuration trains nothing, so it leaves the
        budget to trials that do, up to `n_trials` such trials in one `optimize` (a
        sampler that proposes only what it has finished still ends, after at most twice
        `n_trials` trials). A stratified study (`per_penalty`) counts every trial: its
        budget is a number of trials per penalty."""
        if self.sweep.per_penalty is not None:
            return 0
        free = min(reused, n_trials - self._free_reused)
        self._free_reused += free
        return free

    def _fail_stale(self) -> None:
        """Fail (and so retry) the trials of dead workers, as optimize() does before each
        trial; at most once a heartbeat interval, since a trial goes stale only after
        two without a beat, and the check reads every RUNNING trial of the study."""
        if self._heartbeat is None:
            return  # a storage without heartbeats has no stale trials
        now = time.monotonic()
        if self._stale_checked is not None and now - self._stale_checked < self._heartbeat.interval:
            return
        self._stale_checked = now
        optuna.storages.fail_stale_trials(self.study)

    def _overlapping(self, n_trials: int) -> bool:
        """Whether rounds are written while the next trains: more than one round, each
        of many trials, told in bulk and planned from the trials this process knows
        (which include the written-but-untold round)."""
        k = self.sweep.batch
        return 1 < k < n_trials and self._teller is not None and self._known is not None

    # --- 1. ask ----------------------------------------------------------------------

    def _ask_round(self, k: int, pruning: PruningView) -> tuple[list[Slot], bool]:
        """Up to k trials, and whether they were created with their first heartbeat."""
        asked = self._asker.planned(k)
        if asked is None:
            # `study.ask()` plans from the storage: the round being written must be told
            # first, as it would be without a recording process.
            self._settle()
            asked = self._asker.each(k)
        return self._slots(asked, pruning), asked.beaten

    def _slots(self, asked: Asked, pruning: PruningView) -> list[Slot]:
        if asked.completed is not None:
            pruning.use(asked.completed)
        self._reusable.add(asked.reusable)
        every, repeats = self.sweep.checkpoint_every, self.sweep.repeats
        return [
            Slot(trial, cfg, Checkpoints(trial, every, cfg.epochs, pruning, self._reports), repeats)
            for trial, cfg in asked.trials
        ]

    # --- 2. train, 3. conclude -------------------------------------------------------

    def _round(self, slots: list[Slot], pruning: PruningView) -> None:
        reused = {i: rec for i, slot in enumerate(slots) if (rec := self._reuse(slot))}
        self.reused += len(reused)
        training = [slot for i, slot in enumerate(slots) if i not in reused]
        try:
            if training:
                self._training.train(training, pruning, one_by_one=self.sweep.batch == 1)
        except KeyboardInterrupt:
            self._finish([self._outcome(s, INTERRUPTED) for s in slots], slots)
            raise
        except Exception as e:  # the untrained trials of the round fail; the study goes on
            self._failed(f"{type(e).__name__}: {e}", slots, e)
            return
        self._failed_rounds.clear()
        recs = [reused.get(i) or self._conclude(slot) for i, slot in enumerate(slots)]
        killpoints.passing("trained")
        self._finish(recs, slots)

    def _reuse(self, slot: Slot) -> TrialRecord | None:
        trial = slot.trial
        return self._reusable.record(trial.number, trial.params, slot.cfg, slot.started_ms)

    def _failed(self, error: str, slots: list[Slot], e: Exception) -> None:
        """A round whose training raised: its trials recorded; a systematic fault (a bug,
        a full disk, a device gone) would fail every trial for ever, so the study stops
        once the same error has failed `SAME_FAILURES` rounds in a row."""
        self._finish([self._outcome(s, error) for s in slots], slots)
        self._failed_rounds.append(error)
        recent = self._failed_rounds[-SAME_FAILURES:]
        if len(recent) == SAME_FAILURES and len(set(recent)) == 1:
            raise StudyStopped(
                f"stopped: {SAME_FAILURES} rounds in a row failed with {error}"
            ) from e

    def _outcome(self, slot: Slot, error: str) -> TrialRecord:
        """After a failure: a trial whose stack finished before it keeps its result; one
        that did not is FAIL with the repeats it finished."""
        if all(r is not None for r in slot.results):
            return self._conclude(slot)
        finished = [r for r in slot.results if r is not None]
        return self._record(slot, TrialState.FAIL, error, finished)

    def _conclude(self, slot: Slot) -> TrialRecord:
        results = slot.finished()
        state, error = conclude(results, slot.checkpoints.pruned_at)
        return self._record(slot, state, error, results)

    def _record(
        self,
        slot: Slot,
        state: TrialState,
        error: str | None,
        results: Sequence[TrialResult] = (),
    ) -> TrialRecord:
        number, tracked = slot.trial.number, self.recorder.tracked
        if tracked and self._writing is not None and results and results[0].state_dict:
            # The recording process serializes them (`_finish`), off the training process.
            self._weights[number] = results[0].state_dict
        return build_record(
            self.sweep.study,
            number,
            slot.cfg,
            list(results),
            state,
            slot.started_ms,
            error,
            weights=tracked and self._writing is None,
            keep_history=tracked,
        )

    # --- 4. record and tell ----------------------------------------------------------

    def _finish(self, recs: list[TrialRecord], slots: list[Slot]) -> None:
        """Record the round, then tell Optuna (`sweeps.telling`). With a recording process
        the round is handed to it, and learned once it is written: when the next round
        has trained (`_settle`), or when the loop ends."""
        self._reports.flush()  # a told trial's reports must be in the storage
        trials = [slot.trial for slot in slots]
        if self._teller is None:
            self._tell_public(recs, trials)
            return
        self._settle()  # the round before first: its trials were told to the sampler first
        decided = decide(self.study, self._teller, recs, trials, self.origin)
        if self._writing is None:
            self._learn(decided, write_round(self.recorder.write, self._teller, recs, decided.rows))
            return
        weights = [self._weights.pop(trial.number, None) for trial in trials]
        self._writing.submit(recs, weights, decided.rows)
        self._pending = decided
        assert self._known is not None  # `_overlapping`
        self._known.previews = decided.previews()

    def _settle(self) -> None:
        """Wait for the round the recording process is writing and telling. Ctrl-C while
        waiting still waits (it is being written whatever we do), then stops."""
        pending, self._pending = self._pending, None
        if pending is None or self._writing is None:
            return
        if self._known is not None:
            self._known.previews = []
        try:
            written = self._writing.result()
        except KeyboardInterrupt:
            self._learn(pending, self._writing.result())
            raise
        self._learn(pending, written)

    def _learn(self, decided: Decided, written: RoundWritten) -> None:
        """This process's view of a round once it is written and told."""
        assert self._teller is not None
        learned = learn(self._teller, decided, written)
        self.recorder.show_best(learned.recorded)
        self._let_go(learned.dropped, said=True)
        # Written but ended by another worker before the tell: its heal keeps them right.
        self._let_go(learned.taken, said=False)
        self._told(learned.trials, learned.ended)

    def _tell_public(self, recs: list[TrialRecord], trials: list[optuna.Trial]) -> None:
        """Without Optuna's tables: the round recorded, then each trial told."""
        recorded = self.recorder.write(recs)
        self.recorder.show_best(recorded)
        by_number = {rec.number: rec for rec in recorded}
        self._let_go([t for t in trials if t.number not in by_number], said=True)
        for trial in trials:
            if trial.number not in by_number:
                continue
            told = tell_public(self.study, by_number[trial.number], trial, self.origin)
            if told is None:
                self._let_go([trial], said=False)  # another worker ended it first
            else:
                self._told([trial], [told])

    def _told(self, trials: list[optuna.Trial], ended: list[FrozenTrial]) -> None:
        """The trials are told (`ended`, as the storage has them): no more beats."""
        killpoints.passing("told")
        if self._beats is not None:
            self._beats.forget(trial_ids(trials))
        if self._known is not None:
            self._known.cache.add(ended)
        if self.progress is not None:
            for frozen in ended:
                self.progress.update(frozen)

    def _let_go(self, trials: list[optuna.Trial], *, said: bool) -> None:
        """Trials another worker took over (`sweeps.fencing`): no more beats, counted;
        warned of unless the recorder `said` so."""
        if not trials:
            return
        numbers = [trial.number for trial in trials]
        self.lost.extend(numbers)
        if self._beats is not None:
            self._beats.forget(trial_ids(trials))
        if not said:
            warn(lost_message(numbers))

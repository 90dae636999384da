"""A trial's life, top to bottom: asked, trained, concluded, recorded, told.

A study's trials run in rounds of K (`--batch K`, else 1), through Optuna's ask-and-tell
interface rather than `study.optimize`, for what optimize does not allow: K trials in
flight at once, asked from one model and written in bulk. What optimize does per trial is
done per round: stale trials of dead workers are failed (and retried) first, a thread
beats for the round's trials, the timeout is checked, an exhausted grid stops the loop.

1. Ask (`RoundOptimizer._ask_round`). A TPE round's K proposals come from one model of
   the finished trials (`sweeps.sampling.RoundSampler.plan`), which this process keeps
   across rounds (`sweeps._optuna.read`); the K trials are created in one transaction
   (`sweeps._optuna.ask`), with their first heartbeat. Otherwise (other samplers, a round
   of one, enqueued trials to pop first) each trial is asked through `study.ask()`, the
   study read once for the round (`sweeps._optuna.ask_view`).
2. Train (`_round`). K = 1: the trial's repeats train one after another with
   `trainer.train`, exactly as `sweeps train` trains them. K > 1: the round trains as
   one stacked model (`trainer.batched`); configs that cannot share a stack
   (`trainer.batched.batch_key`) train in separate stacks of the same round. Every
   `checkpoint_every` epochs the first repeat's validation loss is reported and the
   pruner asked (`Checkpoints`; nothing at all without a pruner).
3. Conclude (`conclude`, `build_record`). Each trial's end state and its record, the
   repeats averaged epoch by epoch:
     - a training error → FAIL with the error message; the study goes on;
     - divergence (non-finite loss) → PRUNED, tagged `diverged`, so TPE learns to avoid
       the region (it ignores FAIL trials but ranks pruned ones as worst);
     - pruning → PRUNED with the history so far;
     - Ctrl-C → FAIL ("interrupted"), recorded, then the interrupt propagates.
4. Record (`_finish` → the `record` callable, `sweeps.recording.Recorder.record_many`):
   MLflow child runs and results rows of the whole round, in bulk. A study of several
   rounds hands each round to a recording process instead
   (`sweeps.recording.RecordingProcess`), which writes it while the next round trains;
   the next round is planned with its results as they will be told (`_known`).
5. Tell (`_tell`, once the round is recorded: at once, or when the recording process
   has written it, `_settle`): Optuna learns the round's states and values in one
   transaction (`sweeps._optuna.tell`), with the record kept on each trial for repair
   (`sweeps.recording.repair_info`).

Either way each trial is its own Optuna trial, MLflow child run and results row. Where
the storage is not a tested RDB schema (or SWEEPS_OPTUNA_PUBLIC=1), every step takes
Optuna's public API instead, with the same rows as the result.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import optuna
import sqlalchemy as sa
import torch
from optuna.trial import FrozenTrial

from sweeps import killpoints
from sweeps._optuna import Told, fenced, preview, storage_of, trial_ids
from sweeps._optuna.ask_view import AskView
from sweeps.config import PrunerKind, SamplerKind, SweepConfig
from sweeps.data_pins import TRIAL_ATTR as DATA_ATTR
from sweeps.errors import SweepsError
from sweeps.fencing import lost_message
from sweeps.pruning import PruningView, Report, Reports
from sweeps.recording import RECORD_ATTR, keep, repair_info, serialize_weights, warn
from sweeps.sampling import (
    GridSampler,
    RoundSampler,
    grid_points,
    grid_size,
    penalty_counts,
    suggest,
)
from sweeps.shares import SHARE_ATTR
from tracking.records import TrialRecord, TrialState, now_ms
from trainer import METRICS, Task, TrainStatus, TrialConfig, TrialResult, train
from trainer.batched import batch_key, train_batch

if TYPE_CHECKING:
    from sweeps._optuna.ask import BulkAsker
    from sweeps._optuna.beat import BulkHeartbeat
    from sweeps._optuna.read import TrialCache
    from sweeps._optuna.tell import BulkTeller, TellRow, Written
    from sweeps.recording import RecordingProcess

_COMPLETE = (optuna.trial.TrialState.COMPLETE,)
VAL_LOSS = METRICS.index("val_loss")  # the objective's column of the trainer's metrics
OPTUNA_STATE = {
    TrialState.COMPLETE: optuna.trial.TrialState.COMPLETE,
    TrialState.PRUNED: optuna.trial.TrialState.PRUNED,
    TrialState.FAIL: optuna.trial.TrialState.FAIL,
}


_logger = logging.getLogger("sweeps")

SAME_FAILURES = 3  # rounds in a row failing with one error stop the study


class StudyStopped(SweepsError):
    """Rounds kept failing with the same error; the study stops (exit 2, one line)."""


REUSED_ATTR = "sweeps.reused_from"  # user attribute: the trial whose result it took
INTERRUPTED = "interrupted"  # the error of a trial a stop (Ctrl-C, SIGTERM) cut short


def _user_attrs(rec: TrialRecord, data_version: str | None, share: str | None) -> dict[str, object]:
    """What a told trial keeps as user attributes: its record (for repair), the data
    version it was trained on (`sweeps.data_pins`), the share of a launch it counts
    toward (`sweeps.shares`; not when a stop cut it short: a restarted worker runs
    another in its place) and, if it took an earlier trial's result, which one."""
    attrs: dict[str, object] = {RECORD_ATTR: repair_info(rec)}
    if data_version is not None:
        attrs[DATA_ATTR] = data_version
    if share is not None and rec.error != INTERRUPTED:  # a restart runs one in its place
        attrs[SHARE_ATTR] = share
    if rec.reused_from is not None:
        attrs[REUSED_ATTR] = rec.reused_from
    return attrs


def _config_key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A trial's searched parameters as a key: the rest of its config is the study's."""
    return tuple(sorted(params.items()))


@dataclass
class _Member:
    """One stacked model: trial `slot`'s repeat `repeat`."""

    slot: int
    repeat: int
    cfg: TrialConfig


@dataclass(frozen=True)
class _Pending:
    """A round handed to the recording process, which writes it and then tells Optuna
    its `rows`; `previews` are its trials as they will be told."""

    recs: list[TrialRecord]
    slots: list[_Slot]
    told: list[Told]
    rows: list[TellRow]
    previews: list[FrozenTrial]


@dataclass
class _Slot:
    """One asked trial of the round."""

    trial: optuna.Trial
    cfg: TrialConfig
    checkpoints: Checkpoints
    started_ms: int = field(default_factory=now_ms)
    results: list[TrialResult | None] = field(default_factory=list)


@dataclass
class RoundOptimizer:
    """Runs `n_trials` trials of `study` in rounds of `sweep.batch` (see above)."""

    study: optuna.Study
    sweep: SweepConfig
    task: Task
    device: torch.device
    device_label: str
    record: Callable[[list[TrialRecord]], list[TrialRecord]]
    on_trial: Callable[[FrozenTrial], None] = lambda _trial: None
    # Whether records carry what only MLflow keeps: each trial's serialized weights and
    # per-epoch history (False: an untracked study, whose records need their final values).
    weights: bool = True
    # Where a round is written while the next one trains (`_finish`), and what the study
    # process does with a round once it is written (the parent run's best trial).
    background: Callable[[], RecordingProcess | None] = lambda: None
    on_recorded: Callable[[list[TrialRecord]], None] = lambda _recs: None
    # What the end of the study can do while the last round is written: called once, with
    # every finished trial as it will be when that round is told (the parent run's figures).
    while_last_written: Callable[[list[FrozenTrial]], None] = lambda _trials: None
    # The digest of the data this process trains on (`sweeps.data_pins`), kept on each
    # trial: a result is reused only from a trial of the same data.
    data_version: str | None = None
    # The share of a launch this worker runs (`sweeps worker --share-id`), kept on each
    # trial it tells: a worker restarted by its engine counts them and runs the rest.
    share: str | None = None
    _reporting: bool = field(init=False)
    _space: SweepConfig = field(init=False)
    _reports: Reports = field(init=False)
    _teller: BulkTeller | None = field(init=False)
    _asker: BulkAsker | None = field(init=False)
    _cache: TrialCache | None = field(init=False)
    _heartbeat: _Heartbeat | None = field(init=False)
    _beats: _Beats | None = field(init=False)  # beats for the trials in flight
    _complete: dict[tuple[tuple[str, Any], ...], FrozenTrial] = field(default_factory=dict)
    reused: int = 0  # trials that took an identical earlier trial's result (`_reuse`)
    _free_reused: int = 0  # of them, those not counted toward `optimize`'s n_trials
    lost: list[int] = field(default_factory=list)  # trials another worker took over
    _failed_rounds: list[str] = field(default_factory=list)  # errors of the rounds in a row
    _writing: RecordingProcess | None = None  # the recording process, when overlapping
    _pending: _Pending | None = None  # the round it is writing
    _stale_checked: float | None = None  # when `_fail_stale` last looked (monotonic)
    _weights: dict[int, Mapping[str, torch.Tensor]] = field(default_factory=dict)  # for it
    _grid: list[tuple[dict[str, Any], dict[str, Any], TrialConfig]] | None = None  # `_ask_grid`

    def __post_init__(self) -> None:
        # Reports exist for the pruner: without one, no checkpoint reads or writes anything.
        self._reporting = self.sweep.pruner is not PrunerKind.NONE
        # Trials are suggested from the base config on this device (not one replace each).
        base = self.sweep.base.replace(device=self.device_label)
        self._space = dataclasses.replace(self.sweep, base=base)
        self._reports = Reports.of(self.study)
        self._heartbeat = _Heartbeat.of(self.study)
        self._beats = None if self._heartbeat is None else _Beats(self._heartbeat)
        self._teller = _fenced(self.study, "telling a round's trials", _bulk_teller)
        self._asker = _fenced(
            self.study, "asking a round's trials", _bulk_asker, (RoundSampler, GridSampler)
        )
        self._cache = _fenced(
            self.study, "reading a study's trials", lambda e: _trial_cache(e, self.study)
        )

    def optimize(self, n_trials: int) -> None:
        deadline = None if self.sweep.timeout is None else time.monotonic() + self.sweep.timeout
        done = 0
        self._free_reused = 0
        if self._overlapping(n_trials):
            self._writing = self.background()
        try:
            while done < n_trials and (deadline is None or time.monotonic() < deadline):
                k = min(self.sweep.batch, n_trials - done, self._grid_left())
                if k <= 0:
                    break  # the grid sampler ran every point
                self._fail_stale()
                pruning = PruningView(self.study, self._completed if self._cache else None)
                slots, beaten = self._ask_round(k, pruning)
                if not slots:
                    break  # every point of the grid is taken
                killpoints.passing("asked")
                if self._beats is not None:
                    self._beats.watch(trial_ids([s.trial for s in slots]), beaten)
                reused_before = self.reused
                self._round(slots, pruning)
                free = self._free_reuses(self.reused - reused_before, n_trials)
                done += len(slots) - free
            if self._pending is not None:
                self.while_last_written(self._known())
        finally:
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
        of many trials, told in bulk and planned from this process's trials (which
        include the written-but-untold round, `_known`)."""
        k = self.sweep.batch
        return 1 < k < n_trials and self._teller is not None and self._cache is not None

    def _grid_left(self) -> int:
        """BruteForceSampler stops `optimize` when the grid is exhausted; ask/tell must ask.
        A claimed grid (`_ask_grid`) comes back short or empty by itself."""
        if self.sweep.sampler is not SamplerKind.GRID or self._claims_grid():
            return self.sweep.batch
        finished = self.study.get_trials(deepcopy=False, states=tuple(OPTUNA_STATE.values()))
        return grid_size(self.sweep) - len(finished)

    def _claims_grid(self) -> bool:
        return self.sweep.sampler is SamplerKind.GRID and self._asker is not None

    def _ask_round(self, k: int, pruning: PruningView) -> tuple[list[_Slot], bool]:
        """Asks up to k trials: a grid's free points (`_ask_grid`), or in one go from the
        trials this process knows (`_ask_known`), both created with their first heartbeat
        (True); else one `study.ask()` at a time (`_ask_each`)."""
        slots = self._ask_grid(k, pruning) if self._claims_grid() else self._ask_known(k, pruning)
        if slots is not None:
            return slots, True
        # `study.ask()` plans from the storage: the round being written must be told first,
        # as it would be without a recording process (a short last round, a round of one).
        self._settle()
        return self._ask_each(k, pruning), False

    def _ask_grid(self, k: int, pruning: PruningView) -> list[_Slot]:
        """Up to k points of the grid that no trial of the study holds, claimed in one
        transaction (`sweeps._optuna.ask.BulkAsker.claim`): BruteForceSampler picks from
        the trials it reads, and workers (or one round's asks) reading the same trials
        pick the same point. None at all once every point is taken."""
        assert self._asker is not None
        if self._grid is None:
            fixed = [optuna.trial.FixedTrial(p) for p in grid_points(self.sweep)]
            cfgs = [suggest(trial, self._space) for trial in fixed]
            self._grid = [
                (f.params, f.distributions, cfg) for f, cfg in zip(fixed, cfgs, strict=True)
            ]
        points = [(params, dists) for params, dists, _ in self._grid]
        trials = self._asker.claim(self.study, points, k, heartbeat=self._heartbeat is not None)
        cfg_of = {_config_key(params): cfg for params, _, cfg in self._grid}
        slots = [self._slot(t, cfg_of[_config_key(t.params)], pruning) for t in trials]
        if self._cache is not None:
            self._cache.refresh()
            pruning.use(self._known(_COMPLETE))
        return slots

    def _ask_known(self, k: int, pruning: PruningView) -> list[_Slot] | None:
        """A planned round created in one transaction, from the study as `_cache` knows it
        (None where that cannot be: a round of one, no fenced storage, WAITING trials to
        pop first)."""
        sampler = self.study.sampler
        if self._cache is None or self._asker is None or not isinstance(sampler, RoundSampler):
            return None
        self._cache.refresh()
        if self._cache.waiting or sampler.plan(self._known(), k) != k:
            return None
        if sampler.stratified:
            slots = self._ask_balanced(sampler.take_by_penalty(), k, pruning)
        else:
            slots = self._ask_planned(sampler.take(), pruning)
        # The pruner starts from the completed trials the round was planned with, as
        # Optuna's optimize() prunes a trial against the snapshot its sampler read.
        completed = self._known(_COMPLETE)
        pruning.use(completed)
        self._index_complete(completed)
        return slots

    def _index_complete(self, completed: list[FrozenTrial]) -> None:
        """The finished trials an identical proposal takes its result from (`_reuse`)."""
        for trial in completed:
            attrs = trial.user_attrs
            if attrs.get(DATA_ATTR) != self.data_version:
                continue  # trained on other data (or on data never pinned)
            if attrs.get(RECORD_ATTR, {}).get("reused_from") is None:
                self._complete.setdefault(_config_key(trial.params), trial)

    def _completed(self) -> list[FrozenTrial]:
        assert self._cache is not None
        self._cache.refresh()
        return self._known(_COMPLETE)

    def _known(
        self, states: tuple[optuna.trial.TrialState, ...] | None = None
    ) -> list[FrozenTrial]:
        """The finished trials `_cache` knows, and the round being written as it will be
        told: the next round is planned with its results, as if it were told already.

        Each trial once: the recording process may have told the round before this
        process refreshed (a busy machine), and the refresh then read it from the storage.
        """
        assert self._cache is not None
        known = self._cache.finished() if states is None else self._cache.finished(states)
        if self._pending is None:
            return known
        read = {t.number for t in known}  # a study's trial numbers are unique
        previews = [
            t
            for t in self._pending.previews
            if t.number not in read and (states is None or t.state in states)
        ]
        if previews and known and previews[0].number < known[-1].number:
            # By number, as the cache keeps them: another worker's trial, read from the
            # storage, can be newer than the round being written.
            return sorted(known + previews, key=lambda t: t.number)
        return known + previews

    def _ask_each(self, k: int, pruning: PruningView) -> list[_Slot]:
        """Asks k trials through `study.ask()`; while that takes long, those asked so far
        get a heartbeat.

        Asking thousands of trials (TPE, K in the thousands on a GPU) can outlast the grace
        period, and a trial without any heartbeat for that long counts as lost
        (`sweeps.storage.lost_trials`). Beating every half interval keeps the cost at zero
        for a quick ask.
        """
        heartbeat = self._heartbeat
        slots: list[_Slot] = []
        last_beat = time.monotonic()
        with AskView(self.study).serving() as view:
            sampler = self.study.sampler
            if isinstance(sampler, RoundSampler):  # one model for the round's asks
                sampler.plan(view.finished(), k)
                if sampler.stratified:  # penalties by count, as the round starts
                    sampler.assign(penalty_counts(view.get_trials(deepcopy=False)), k)
            for _ in range(k):
                slots.append(self._ask(pruning, view))
                if heartbeat and time.monotonic() - last_beat > heartbeat.interval / 2:
                    heartbeat.beat(trial_ids([s.trial for s in slots]))
                    last_beat = time.monotonic()
        pruning.use(view.completed())
        self._index_complete(view.completed())
        return slots

    def _ask(self, pruning: PruningView, view: AskView) -> _Slot:
        trial = self.study.ask()
        view.asking(trial)
        cfg = suggest(trial, self._space)
        view.asked(trial)
        return self._slot(trial, cfg, pruning)

    def _ask_planned(self, proposals: list[dict[str, Any]], pruning: PruningView) -> list[_Slot]:
        """The round's trials with the sampler's proposals, created in one transaction: each
        proposal goes through `suggest` as a FixedTrial, which also yields its distributions."""
        assert self._asker is not None
        fixed = [optuna.trial.FixedTrial(params) for params in proposals]
        cfgs = [suggest(trial, self._space) for trial in fixed]
        planned = [(f.params, f.distributions) for f in fixed]
        trials = self._asker.ask(self.study, planned, heartbeat=self._heartbeat is not None)
        return [self._slot(t, cfg, pruning) for t, cfg in zip(trials, cfgs, strict=True)]

    def _ask_balanced(
        self, proposals: Mapping[str, list[dict[str, Any]]], k: int, pruning: PruningView
    ) -> list[_Slot]:
        """A stratified round (`--per-penalty`): k trials, each of the penalty with the
        fewest trials in the study, counted under the lock that creates them
        (`sweeps._optuna.ask.BulkAsker.ask_balanced`), so that workers asking at once
        still give every penalty its share."""
        assert self._asker is not None
        points: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
        cfg_of: dict[tuple[tuple[str, Any], ...], TrialConfig] = {}
        for penalty, planned in proposals.items():
            for params in planned:
                fixed = optuna.trial.FixedTrial(params)
                cfg_of[_config_key(params)] = suggest(fixed, self._space)
                points.setdefault(penalty, []).append((fixed.params, fixed.distributions))
        order = [p.value for p in self.sweep.penalties]
        heartbeat = self._heartbeat is not None
        trials = self._asker.ask_balanced(self.study, points, order, k, heartbeat=heartbeat)
        return [self._slot(t, cfg_of[_config_key(t.params)], pruning) for t in trials]

    def _slot(self, trial: optuna.Trial, cfg: TrialConfig, pruning: PruningView) -> _Slot:
        every = self.sweep.checkpoint_every
        return _Slot(trial, cfg, Checkpoints(trial, every, cfg.epochs, pruning, self._reports))

    def _round(self, slots: list[_Slot], pruning: PruningView) -> None:
        reused = {i: rec for i, slot in enumerate(slots) if (rec := self._reuse(slot))}
        self.reused += len(reused)
        training = [slot for i, slot in enumerate(slots) if i not in reused]
        for slot in slots:
            slot.results = [None] * self.sweep.repeats
        try:
            if self.sweep.batch == 1 and training:
                self._train_one(training[0])
            elif training:
                for stack in self._stacks(training):
                    self._train(training, stack, pruning)
        except KeyboardInterrupt:
            self._finish([self._outcome(s, INTERRUPTED) for s in slots], slots)
            raise
        except Exception as e:  # the untrained trials of the round fail; the study goes on
            error = f"{type(e).__name__}: {e}"
            self._finish([self._outcome(s, error) for s in slots], slots)
            self._failed_rounds.append(error)
            recent = self._failed_rounds[-SAME_FAILURES:]
            if len(recent) == SAME_FAILURES and len(set(recent)) == 1:
                # A systematic fault (a bug, a full disk, a device gone) would fail every
                # trial for ever: stop with it once it has repeated, its trials recorded.
                raise StudyStopped(
                    f"stopped: {SAME_FAILURES} rounds in a row failed with {error}"
                ) from e
            return
        self._failed_rounds.clear()
        recs = [reused.get(i) or self._conclude(slot) for i, slot in enumerate(slots)]
        killpoints.passing("trained")
        self._finish(recs, slots)

    def _reuse(self, slot: _Slot) -> TrialRecord | None:
        """The record of a finished COMPLETE trial with the same configuration, for a trial
        that would train it again: every seed and setting is the study's, so an identical
        proposal (TPE proposes the parameterless `none` again and again) has an identical
        result. None when there is none to take."""
        earlier = self._complete.get(_config_key(slot.trial.params))
        if earlier is None:
            return None
        kept: dict[str, Any] = earlier.user_attrs.get(RECORD_ATTR) or {}
        if kept.get("state") != TrialState.COMPLETE.value or earlier.value is None:
            return None
        now = now_ms()
        return TrialRecord(
            study=self.sweep.study,
            number=slot.trial.number,
            state=TrialState.COMPLETE,
            params=slot.cfg.as_params(),
            final=dict(kept.get("final") or {}),
            value=earlier.value,
            duration_s=0.0,
            device=self.device_label,
            start_time_ms=slot.started_ms,
            end_time_ms=now,
            reused_from=earlier.number,
        )

    def _stacks(self, slots: list[_Slot]) -> list[list[_Member]]:
        """Every repeat of every trial, grouped into the stacks that can train together."""
        stacks: dict[tuple[object, ...], list[_Member]] = defaultdict(list)
        for i, slot in enumerate(slots):
            for r, member in enumerate(repeat_configs(slot.cfg, self.sweep.repeats)):
                stacks[batch_key(member)].append(_Member(i, r, member))
        return list(stacks.values())

    def _outcome(self, slot: _Slot, error: str) -> TrialRecord:
        """After a failure: a trial whose stack finished before it keeps its result; one
        that did not is FAIL with the repeats it finished."""
        if all(r is not None for r in slot.results):
            return self._conclude(slot)
        finished = [r for r in slot.results if r is not None]
        return self._record(slot, TrialState.FAIL, error, finished)

    def _train_one(self, slot: _Slot) -> None:
        """Sequential: repeats one after another, pruned on the first seed's curve, up to
        the first that did not complete."""
        for r, member in enumerate(repeat_configs(slot.cfg, self.sweep.repeats)):
            hook = slot.checkpoints if r == 0 and self._reporting else None
            result = train(member, self.task, on_epoch=hook, device=self.device)
            slot.results[r] = result
            if result.status is not TrainStatus.COMPLETED:
                return

    def _train(self, slots: list[_Slot], group: list[_Member], pruning: PruningView) -> None:
        def on_checkpoint(epoch: int, members: list[int], metrics: torch.Tensor) -> set[int]:
            """Report each trial's first repeat (added together); a pruned trial stops all
            its repeats."""
            if not slots[group[0].slot].checkpoints.due(epoch):
                return set()  # the last epoch: nothing left to prune
            pruning.refresh()  # a round is long: see other workers' completions
            val_loss = metrics[:, VAL_LOSS].tolist()
            due = [
                (group[i].slot, value)
                for i, value in zip(members, val_loss, strict=True)
                if group[i].repeat == 0
            ]
            self._reports.add([slots[s].checkpoints.report(epoch, value) for s, value in due])
            pruned = {s for s, _ in due if slots[s].checkpoints.decide(epoch)}
            return {i for i in members if group[i].slot in pruned}

        results = train_batch(
            [m.cfg for m in group],
            self.task,
            on_checkpoint=on_checkpoint if self._reporting else None,
            device=self.device,
            every=self.sweep.checkpoint_every,
        )
        for m, result in zip(group, results, strict=True):
            slots[m.slot].results[m.repeat] = result

    def _conclude(self, slot: _Slot) -> TrialRecord:
        # Repeats up to the first one that did not complete (the sequential path trains no
        # further; a stack trains them all, and those after it do not count).
        results: list[TrialResult] = []
        for result in slot.results:
            assert result is not None
            results.append(result)
            if result.status is not TrainStatus.COMPLETED:
                break
        state, error = conclude(results, slot.checkpoints.pruned_at)
        return self._record(slot, state, error, results)

    def _record(
        self,
        slot: _Slot,
        state: TrialState,
        error: str | None,
        results: Sequence[TrialResult] = (),
    ) -> TrialRecord:
        number = slot.trial.number
        if self.weights and self._writing is not None and results and results[0].state_dict:
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
            weights=self.weights and self._writing is None,
            keep_history=self.weights,
        )

    def _finish(self, recs: list[TrialRecord], slots: list[_Slot]) -> None:
        """Record the round in one call (MLflow and results rows), then tell Optuna (in
        one transaction where `sweeps._optuna.tell` may write the storage).

        With a recording process the round is handed to it, and told once it is written:
        when the next round has trained (`_settle`), or when the loop ends.
        """
        self._reports.flush()  # a told trial's reports must be in the storage
        if self._writing is not None:
            self._settle()
            weights = [self._weights.pop(slot.trial.number, None) for slot in slots]
            told = [self._told(rec, slot) for rec, slot in zip(recs, slots, strict=True)]
            assert self._teller is not None  # `_overlapping`
            rows = self._teller.ended(self.study, told)
            self._writing.submit(recs, weights, rows)
            self._pending = _Pending(recs, slots, told, rows, [preview(t) for t in told])
            return
        recorded = {rec.number: rec for rec in self.record(recs)}
        self._let_go([s for s in slots if s.trial.number not in recorded], said=True)
        kept = [s for s in slots if s.trial.number in recorded]
        self._tell([recorded[s.trial.number] for s in kept], kept)

    def _let_go(self, slots: list[_Slot], *, said: bool) -> None:
        """Trials another worker took over (`sweeps.fencing`): no more beats, counted;
        said on stderr unless the recorder `said` so."""
        if not slots:
            return
        numbers = [s.trial.number for s in slots]
        self.lost.extend(numbers)
        if self._beats is not None:
            self._beats.forget(trial_ids([s.trial for s in slots]))
        if not said:
            warn(lost_message(numbers))

    def _settle(self) -> None:
        """Wait for the round the recording process is writing and telling. Ctrl-C while
        waiting still waits (it is being written whatever we do), then stops."""
        pending, self._pending = self._pending, None
        if pending is None or self._writing is None:
            return
        try:
            written = self._writing.result()
        except KeyboardInterrupt:
            self._told_written(pending, *self._writing.result())
            raise
        self._told_written(pending, *written)

    def _told_written(
        self, pending: _Pending, run_ids: list[str | None], written: Written, lost: list[int]
    ) -> None:
        dropped = set(lost)
        keep = [i for i, rec in enumerate(pending.recs) if rec.number not in dropped]
        self._let_go([s for s in pending.slots if s.trial.number in dropped], said=True)
        self.on_recorded(
            [
                rec if run_id is None else dataclasses.replace(rec, mlflow_run_id=run_id)
                for rec, run_id in ((pending.recs[i], run_ids[i]) for i in keep)
            ]
        )
        assert self._teller is not None
        told = [pending.told[i] for i in keep]
        rows = [pending.rows[i] for i in keep]
        slots = [pending.slots[i] for i in keep]
        # Written but ended by another worker before the tell: its heal keeps them right.
        told_ids = written.trial_ids
        self._let_go(
            [s for s, row in zip(slots, rows, strict=True) if row.trial_id not in told_ids],
            said=False,
        )
        self._learn(self._teller.as_told(told, rows, written), slots)

    def _learn(self, ended: list[FrozenTrial], slots: list[_Slot]) -> None:
        """This process's view of the slots' trials once they are told (`ended`)."""
        killpoints.passing("told")
        if self._beats is not None:
            self._beats.forget(trial_ids([s.trial for s in slots]))
        if self._cache is not None:
            self._cache.add(ended)
        for frozen in ended:
            self.on_trial(frozen)

    def _told(self, rec: TrialRecord, slot: _Slot) -> Told:
        attrs = _user_attrs(rec, self.data_version, self.share)
        return Told(slot.trial, OPTUNA_STATE[rec.state], rec.value, attrs)

    def _tell(self, recorded: list[TrialRecord], slots: list[_Slot]) -> None:
        """Optuna learns the round's states and values (after it is recorded)."""
        if self._teller is not None:
            told = [self._told(rec, slot) for rec, slot in zip(recorded, slots, strict=True)]
            ended = self._teller.tell(self.study, told)
            # Written but ended by another worker before the tell: its heal keeps them right.
            self._let_go(
                [s for s, t, e in zip(slots, told, ended, strict=True) if e.state != t.state],
                said=False,
            )
            self._learn(ended, slots)
            return
        for rec, slot in zip(recorded, slots, strict=True):
            keep(slot.trial, rec)
            for key, value in _user_attrs(rec, self.data_version, self.share).items():
                if key != RECORD_ATTR:
                    slot.trial.set_user_attr(key, value)
            value = rec.value if rec.state is TrialState.COMPLETE else None
            try:
                frozen = self.study.tell(slot.trial, value, state=OPTUNA_STATE[rec.state])
            except optuna.exceptions.UpdateFinishedTrialError:
                self._let_go([slot], said=False)  # another worker ended it first
                continue
            killpoints.passing("told")
            if self._beats is not None:
                self._beats.forget(trial_ids([slot.trial]))
            self.on_trial(frozen)


# --- 2. train: checkpoints -----------------------------------------------------------


@dataclass
class Checkpoints:
    """Reports the validation loss to Optuna every `every` epochs and asks about pruning.

    Each report ends up as a storage row (`sweeps.pruning.Reports`), so reporting every epoch would
    cost more than training the d2l model; the last epoch is not reported (nothing left to
    prune). A batched round adds a checkpoint's reports of all its trials at once
    (`report`), then asks (`decide`).
    """

    trial: optuna.Trial
    every: int
    epochs: int
    # The pruner, asked through a `PruningView` so that a checkpoint reads no trials.
    should_prune: Callable[[optuna.Trial], bool]
    reports: Reports
    pruned_at: int | None = None

    def due(self, epoch: int) -> bool:
        return not (epoch % self.every or epoch >= self.epochs)

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        """One trial's checkpoint: report, then whether to stop."""
        if not self.due(epoch):
            return False
        self.reports.add([self.report(epoch, metrics["val_loss"])])
        return self.decide(epoch)

    def report(self, epoch: int, val_loss: float) -> Report:
        return (self.trial, epoch, val_loss)

    def decide(self, epoch: int) -> bool:
        """Asks the pruner, once this epoch's report is added."""
        if self.should_prune(self.trial):
            self.pruned_at = epoch
            return True
        return False


def repeat_configs(cfg: TrialConfig, repeats: int) -> list[TrialConfig]:
    """Seeds seed … seed+R−1 for init and shuffling, all on the same data."""
    if repeats == 1 and cfg.effective_data_seed == cfg.seed:
        return [cfg]  # already the one repeat
    return [cfg.replace(seed=cfg.seed + r, data_seed=cfg.seed) for r in range(repeats)]


# --- 3. conclude: the end state and the record -----------------------------------------


def conclude(results: list[TrialResult], pruned_at: int | None) -> tuple[TrialState, str | None]:
    """A trial's state from its repeats (the last one ran, the first to stop ends it)."""
    last = results[-1]
    if last.status is TrainStatus.DIVERGED:
        return TrialState.PRUNED, f"diverged at epoch {last.diverged_epoch}"
    if last.status is TrainStatus.STOPPED:
        return TrialState.PRUNED, f"pruned at epoch {pruned_at}"
    return TrialState.COMPLETE, None


def build_record(
    study: str,
    number: int,
    cfg: TrialConfig,
    results: list[TrialResult],
    state: TrialState,
    started_ms: int,
    error: str | None,
    *,
    weights: bool = True,
    keep_history: bool = True,
) -> TrialRecord:
    """Average repeats epoch by epoch; weights (serialized only when asked: only MLflow
    keeps them) and device come from the first repeat. Without `keep_history` the record has
    its final values only (only MLflow keeps the rest)."""
    history = _mean_history(results)
    final: dict[str, float | None] = {
        m: (history[m][-1] if history.get(m) else None) for m in METRICS
    }
    final.update(_mean_accuracy(results))
    first = results[0] if results else None
    return TrialRecord(
        study=study,
        number=number,
        state=state,
        params=cfg.as_params(),
        final=final,
        value=final["val_loss"] if state is TrialState.COMPLETE else None,
        duration_s=sum(r.duration_s for r in results),
        device=first.device if first else cfg.device,
        start_time_ms=started_ms,
        end_time_ms=now_ms(),
        history=history if keep_history else {},
        weights=(
            serialize_weights(first.state_dict) if weights and first and first.state_dict else None
        ),
        error=error,
    )


def _mean_history(results: list[TrialResult]) -> dict[str, list[float]]:
    if not results:
        return {m: [] for m in METRICS}
    epochs = min(r.epochs_run for r in results)
    if len(results) == 1:  # the default (one repeat): the mean is the history itself
        history = results[0].history  # its lists shared, not copied: nothing changes them
        return {m: h if len(h := history[m]) == epochs else h[:epochs] for m in METRICS}
    n = len(results)
    return {
        m: [
            sum(values) / n
            for values in zip(*(r.history[m][:epochs] for r in results), strict=True)
        ]
        for m in METRICS
    }


def _mean_accuracy(results: list[TrialResult]) -> dict[str, float]:
    """Classification tasks' final accuracies, averaged over repeats that have them.

    They ride in `final` beside METRICS: tracking stores METRICS per epoch and columns for
    them only, so these extra keys reach the Optuna trial's record (`sweeps check`) and
    whoever reads `final`, without changing the results schema.
    """
    scored = [r.accuracy for r in results if r.accuracy]
    if not scored:
        return {}
    return {k: sum(a[k] for a in scored) / len(scored) for k in scored[0]}


# --- the storage's side: fenced writers, heartbeats ----------------------------------


_T = TypeVar("_T")


def _fenced(
    study: optuna.Study,
    what: str,
    make: Callable[[sa.Engine], _T],
    samplers: tuple[type[optuna.samplers.BaseSampler], ...] = (RoundSampler,),
) -> _T | None:
    """`sweeps._optuna.fenced`, only for studies of `samplers`: the RoundSampler's
    after_trial and before_trial are what the writers there were tested with (the grid's
    are no-ops: `sweeps._optuna.ask` claims its points)."""
    if not isinstance(study.sampler, samplers):
        return None
    return fenced(study, what, make)


def _bulk_teller(engine: sa.Engine) -> BulkTeller:
    from sweeps._optuna.tell import BulkTeller

    return BulkTeller(engine)


def _bulk_asker(engine: sa.Engine) -> BulkAsker:
    from sweeps._optuna.ask import BulkAsker

    return BulkAsker(engine)


def _trial_cache(engine: sa.Engine, study: optuna.Study) -> TrialCache:
    from sweeps._optuna.read import TrialCache

    return TrialCache(engine, study)


@dataclass(frozen=True)
class _Heartbeat:
    """The storage's heartbeat: its interval, and a beat for many trials at once."""

    interval: float
    beat: Callable[[Sequence[int]], None]

    @classmethod
    def of(cls, study: optuna.Study) -> _Heartbeat | None:
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


class _Beats:
    """One thread beating, every heartbeat interval, for the trials in flight: the round
    training and the round being written, from when they are asked (`watch`) until they
    are told (`forget`). One thread for the whole loop rather than one a round: starting
    and joining a thread, and the beat it owed at once, cost the round's training ~10 ms.
    """

    def __init__(self, heartbeat: _Heartbeat) -> None:
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

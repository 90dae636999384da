"""Asking a round's K trials.

A TPE round's K proposals come from one model of the finished trials this process knows
(`KnownTrials`, kept across rounds: `sweeps._optuna.read`), and the K trials are created in
one transaction with their first heartbeat (`sweeps._optuna.ask`); a grid's free points are
claimed the same way. Otherwise (other samplers, a round of one, enqueued trials to pop
first) each trial is asked through `study.ask()`, the study read once for the round
(`sweeps._optuna.ask_view`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial

from sweeps._optuna import fenced, trial_ids
from sweeps._optuna.ask_view import AskView
from sweeps.config import SamplerKind, SweepConfig
from sweeps.heartbeats import Heartbeat
from sweeps.reuse import config_key
from sweeps.sampling import (
    GridSampler,
    RoundSampler,
    grid_points,
    grid_size,
    penalty_counts,
    suggest,
)
from sweeps.telling import OPTUNA_STATE
from trainer.config import TrialConfig

if TYPE_CHECKING:
    from sweeps._optuna.ask import BulkAsker
    from sweeps._optuna.read import TrialCache

COMPLETE = (optuna.trial.TrialState.COMPLETE,)
_T = TypeVar("_T")


def fenced_for(
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


class KnownTrials:
    """The finished trials this process knows (`TrialCache`), and the round being written
    as it will be told (`previews`): the next round is planned with its results, as if it
    were told already."""

    def __init__(self, cache: TrialCache) -> None:
        self.cache = cache
        self.previews: list[FrozenTrial] = []

    @classmethod
    def of(cls, study: optuna.Study) -> KnownTrials | None:
        """None where Optuna's tables cannot be read directly."""
        cache = fenced_for(study, "reading a study's trials", lambda e: _trial_cache(e, study))
        return None if cache is None else cls(cache)

    def finished(
        self, states: tuple[optuna.trial.TrialState, ...] | None = None
    ) -> list[FrozenTrial]:
        """By number, each trial once: the recording process may have told the round
        being written before this process refreshed, which then read it from the storage."""
        known = self.cache.finished() if states is None else self.cache.finished(states)
        if not self.previews:
            return known
        read = {t.number for t in known}  # a study's trial numbers are unique
        previews = [
            t
            for t in self.previews
            if t.number not in read and (states is None or t.state in states)
        ]
        if previews and known and previews[0].number < known[-1].number:
            # Another worker's trial, read from the storage, can be newer than the round
            # being written.
            return sorted(known + previews, key=lambda t: t.number)
        return known + previews

    def completed(self) -> list[FrozenTrial]:
        """The COMPLETE trials, the storage read again first."""
        self.cache.refresh()
        return self.finished(COMPLETE)


@dataclass(frozen=True)
class Asked:
    """A round's trials with their configs, and what it was planned with."""

    trials: list[tuple[optuna.Trial, TrialConfig]]
    beaten: bool  # created with their first heartbeat
    # The COMPLETE trials the round was planned with: the pruner starts from them, as
    # Optuna's optimize() prunes a trial against the snapshot its sampler read (None: the
    # pruner reads the storage).
    completed: list[FrozenTrial] | None
    reusable: list[FrozenTrial]  # those a repeated configuration takes its result from


class RoundAsker:
    """Asks up to k trials of `study` from `space` (the study's config, on this device)."""

    def __init__(
        self,
        study: optuna.Study,
        space: SweepConfig,
        heartbeat: Heartbeat | None,
        known: KnownTrials | None,
    ) -> None:
        self.study = study
        self.space = space
        self._heartbeat = heartbeat
        self._known = known
        self._bulk = fenced_for(
            study, "asking a round's trials", _bulk_asker, (RoundSampler, GridSampler)
        )
        self._grid: list[tuple[dict[str, Any], dict[str, Any], TrialConfig]] | None = None

    @property
    def _claims_grid(self) -> bool:
        return self.space.sampler is SamplerKind.GRID and self._bulk is not None

    def grid_left(self, k: int) -> int:
        """BruteForceSampler stops `optimize` when the grid is exhausted; ask/tell must ask.
        A claimed grid comes back short or empty by itself."""
        if self.space.sampler is not SamplerKind.GRID or self._claims_grid:
            return k
        finished = self.study.get_trials(deepcopy=False, states=tuple(OPTUNA_STATE.values()))
        return grid_size(self.space) - len(finished)

    def planned(self, k: int) -> Asked | None:
        """Up to k trials created in one transaction, with their first heartbeat: a grid's
        free points, or a round planned from the trials this process knows. None where that
        cannot be: a round of one, no fenced storage, WAITING trials to pop first."""
        if self._claims_grid:
            return self._ask_grid(k)
        sampler = self.study.sampler
        if self._known is None or self._bulk is None or not isinstance(sampler, RoundSampler):
            return None
        self._known.cache.refresh()
        if self._known.cache.waiting or sampler.plan(self._known.finished(), k) != k:
            return None
        if sampler.stratified:
            trials = self._ask_balanced(sampler.take_by_penalty(), k)
        else:
            trials = self._ask_planned(sampler.take())
        completed = self._known.finished(COMPLETE)
        return Asked(trials, True, completed, completed)

    def _ask_grid(self, k: int) -> Asked:
        """Up to k points of the grid that no trial of the study holds, claimed in one
        transaction (`sweeps._optuna.ask.BulkAsker.claim`): BruteForceSampler picks from
        the trials it reads, and workers (or one round's asks) reading the same trials
        pick the same point. None at all once every point is taken."""
        assert self._bulk is not None
        if self._grid is None:
            fixed = [optuna.trial.FixedTrial(p) for p in grid_points(self.space)]
            cfgs = [suggest(trial, self.space) for trial in fixed]
            self._grid = [
                (f.params, f.distributions, cfg) for f, cfg in zip(fixed, cfgs, strict=True)
            ]
        points = [(params, dists) for params, dists, _ in self._grid]
        heartbeat = self._heartbeat is not None
        trials = self._bulk.claim(self.study, points, k, heartbeat=heartbeat)
        cfg_of = {config_key(params): cfg for params, _, cfg in self._grid}
        completed = None if self._known is None else self._known.completed()
        return Asked([(t, cfg_of[config_key(t.params)]) for t in trials], True, completed, [])

    def _ask_planned(
        self, proposals: list[dict[str, Any]]
    ) -> list[tuple[optuna.Trial, TrialConfig]]:
        """The sampler's proposals, each through `suggest` as a FixedTrial, which also
        yields its distributions."""
        assert self._bulk is not None
        fixed = [optuna.trial.FixedTrial(params) for params in proposals]
        cfgs = [suggest(trial, self.space) for trial in fixed]
        planned = [(f.params, f.distributions) for f in fixed]
        trials = self._bulk.ask(self.study, planned, heartbeat=self._heartbeat is not None)
        return list(zip(trials, cfgs, strict=True))

    def _ask_balanced(
        self, proposals: Mapping[str, list[dict[str, Any]]], k: int
    ) -> list[tuple[optuna.Trial, TrialConfig]]:
        """A stratified round (`--per-penalty`): k trials, each of the penalty with the
        fewest trials in the study, counted under the lock that creates them
        (`sweeps._optuna.ask.BulkAsker.ask_balanced`), so that workers asking at once
        still give every penalty its share."""
        assert self._bulk is not None
        points: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
        cfg_of: dict[tuple[tuple[str, Any], ...], TrialConfig] = {}
        for penalty, planned in proposals.items():
            for params in planned:
                fixed = optuna.trial.FixedTrial(params)
                cfg_of[config_key(params)] = suggest(fixed, self.space)
                points.setdefault(penalty, []).append((fixed.params, fixed.distributions))
        order = [p.value for p in self.space.penalties]
        heartbeat = self._heartbeat is not None
        trials = self._bulk.ask_balanced(self.study, points, order, k, heartbeat=heartbeat)
        return [(t, cfg_of[config_key(t.params)]) for t in trials]

    def each(self, k: int) -> Asked:
        """Asks k trials through `study.ask()`; while that takes long, those asked so far
        get a heartbeat.

        Asking thousands of trials (TPE, K in the thousands on a GPU) can outlast the grace
        period, and a trial without any heartbeat for that long counts as lost
        (`sweeps.storage.lost_trials`). Beating every half interval costs nothing for a
        quick ask.
        """
        heartbeat = self._heartbeat
        asked: list[tuple[optuna.Trial, TrialConfig]] = []
        last_beat = time.monotonic()
        with AskView(self.study).serving() as view:
            sampler = self.study.sampler
            if isinstance(sampler, RoundSampler):  # one model for the round's asks
                sampler.plan(view.finished(), k)
                if sampler.stratified:  # penalties by count, as the round starts
                    sampler.assign(penalty_counts(view.get_trials(deepcopy=False)), k)
            for _ in range(k):
                asked.append(self._ask_one(view))
                if heartbeat and time.monotonic() - last_beat > heartbeat.interval / 2:
                    heartbeat.beat(trial_ids([trial for trial, _ in asked]))
                    last_beat = time.monotonic()
        return Asked(asked, False, view.completed(), view.completed())

    def _ask_one(self, view: AskView) -> tuple[optuna.Trial, TrialConfig]:
        trial = self.study.ask()
        view.asking(trial)
        cfg = suggest(trial, self.space)
        view.asked(trial)
        return trial, cfg


def _bulk_asker(engine: sa.Engine) -> BulkAsker:
    from sweeps._optuna.ask import BulkAsker

    return BulkAsker(engine)


def _trial_cache(engine: sa.Engine, study: optuna.Study) -> TrialCache:
    from sweeps._optuna.read import TrialCache

    return TrialCache(engine, study)

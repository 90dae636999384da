"""Asking the study's pruner at a checkpoint without re-reading every trial each time.

`Trial.should_prune` makes the median (percentile) pruner read all completed trials from
the storage on every call; with K batched trials in flight that read dominated a round.
`SnapshotPruner` is a pruner that asks the study's own one against a snapshot of the
completed trials it holds (an in-memory study, added to as trials complete), and
`PruningView` keeps that snapshot current:

- every round of trials (`sweeps.lifecycle`) starts from the completed trials its asks read
  (`use`), so a sequential trial adds no read at all, as under Optuna's `optimize`, which
  hands the pruner the snapshot its sampler read. No trial of this process completes while
  one trains; another worker's completions are seen from this process's next trial on.
- a batched round (`--batch K`) also calls `refresh()` once per checkpoint, since a round
  is long: another worker's completions are seen one checkpoint later.

The pruner is asked through `Trial.should_prune`, which hands it the running trial with the
values reported so far (`sweeps.reports` keeps the `Trial`'s copy up to date as
`Trial.report` does). Pruners other than the percentile family (hyperband, none) see the
study itself, as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

_COMPLETE = (TrialState.COMPLETE,)


class SnapshotPruner(optuna.pruners.BasePruner):
    """`inner` asked against the completed trials last given to `hold` (the study itself
    until then)."""

    def __init__(
        self, inner: optuna.pruners.PercentilePruner, direction: optuna.study.StudyDirection
    ) -> None:
        self.inner = inner
        self._direction = direction
        self._snapshot: optuna.Study | None = None
        self._held: set[int] = set()  # numbers of the trials in the snapshot

    @classmethod
    def of(cls, study: optuna.Study) -> SnapshotPruner | None:
        """The study's pruner as a SnapshotPruner (installed on the study the first time),
        or None for a pruner outside the percentile family, which reads no trials."""
        pruner = study.pruner
        if isinstance(pruner, SnapshotPruner):
            return pruner
        if not isinstance(pruner, optuna.pruners.PercentilePruner):
            return None
        study.pruner = snapshot = cls(pruner, study.direction)
        return snapshot

    def hold(self, completed: Sequence[FrozenTrial]) -> None:
        """Ask the pruner with these completed trials from now on. Completed trials do not
        change, so only those not held yet are added."""
        if self._snapshot is None:
            storage = optuna.storages.InMemoryStorage()
            self._snapshot = optuna.create_study(storage=storage, direction=self._direction)
        new = [t for t in completed if t.number not in self._held]
        # What a percentile pruner reads of a completed trial: its state and its curve.
        self._snapshot.add_trials(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE,
                value=t.value,
                intermediate_values=t.intermediate_values,
            )
            for t in new
        )
        self._held.update(t.number for t in new)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return self.inner.prune(study if self._snapshot is None else self._snapshot, trial)


class PruningView:
    """`should_prune` for the trials of `study`, reading completed trials once (see above)."""

    def __init__(
        self, study: optuna.Study, read: Callable[[], list[FrozenTrial]] | None = None
    ) -> None:
        """`read` returns the study's completed trials now (default: from the storage)."""
        self._pruner = SnapshotPruner.of(study)
        self._current = False  # whether this view gave the pruner its completed trials
        self._read = read or (lambda: study.get_trials(deepcopy=False, states=_COMPLETE))

    def use(self, completed: list[FrozenTrial]) -> None:
        """Ask the pruner with these completed trials until the next `use` or `refresh`."""
        if self._pruner is not None:
            self._pruner.hold(completed)
            self._current = True

    def refresh(self) -> None:
        """Read the completed trials from the storage now."""
        if self._pruner is not None:
            self.use(self._read())

    def __call__(self, trial: optuna.Trial) -> bool:
        if self._pruner is not None and not self._current:
            self.refresh()
        return trial.should_prune()

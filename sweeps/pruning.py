"""Pruning: the reports of every trial in flight, and the pruner asked about them.

`Reports` stores what trials report at their checkpoints. `Trial.report` stores each value
in its own ORM session: one per trial and checkpoint, K per checkpoint of a `--batch K`
round. `Reports` hands a round's values to `sweeps._optuna.intermediate`, which keeps each
`Trial`'s own copy up to date at once (that copy is what the pruner reads) and inserts them
into Optuna's table when the round's trials end (before they are told), or sooner if they
have waited FLUSH_AFTER_S. That writes another program's schema, so it is used only where
`sweeps._optuna.fenced` allows it: an RDB storage at a schema revision its tests ran on, and
an Optuna that still has the private names it uses; anything else (or
SWEEPS_OPTUNA_PUBLIC=1) gets `Trial.report`.

`PruningView` asks the study's pruner at a checkpoint without re-reading every trial each
time. `Trial.should_prune` makes the median (percentile) pruner read all completed trials
from the storage on every call: with K batched trials in flight, K reads of the whole
history per checkpoint. `SnapshotPruner` is a pruner that asks the study's own one against
a snapshot of the completed trials it holds (an in-memory study, added to as trials
complete), and `PruningView` keeps that snapshot current:

- every round of trials (`sweeps.lifecycle`) starts from the completed trials its asks read
  (`use`), so a sequential trial adds no read at all, as under Optuna's `optimize`, which
  hands the pruner the snapshot its sampler read. No trial of this process completes while
  one trains; another worker's completions are seen from this process's next trial on.
- a batched round (`--batch K`) also calls `refresh()` once per checkpoint, since a round
  is long: another worker's completions are seen one checkpoint later.

The pruner is asked through `Trial.should_prune`, which hands it the running trial with the
values reported so far (`Reports` keeps the `Trial`'s copy up to date as `Trial.report`
does). Pruners other than the percentile family (hyperband, none) see the study itself, as
usual.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState

from sweeps._optuna import fenced

if TYPE_CHECKING:
    from sweeps._optuna.intermediate import IntermediateValues

Report = tuple[optuna.Trial, int, float]  # (trial, step, value)
# Reports wait at most this long for the trial's end to be written with the next ones: a
# pruner reads only completed trials' values, so waiting changes no decision, and a
# dashboard showing a running trial's curve still sees it within seconds.
FLUSH_AFTER_S = 5.0


@dataclass
class Reports:
    """Stores reports of trials (see above); `Reports.of(study)` picks how."""

    writer: IntermediateValues | None  # None: Optuna's own Trial.report
    _since: float = 0.0  # when the oldest pending report was added

    @classmethod
    def of(cls, study: optuna.Study, storage: optuna.storages.BaseStorage | None = None) -> Reports:
        """For `study`, built on `storage` where the caller holds it."""
        return cls(fenced(study, "writing pruning reports", _writer, storage))

    @property
    def engine(self) -> sa.Engine | None:
        """Optuna's storage engine the reports are written to; None: `Trial.report`."""
        return None if self.writer is None else self.writer.engine

    def add(self, reports: Sequence[Report]) -> None:
        """Reports values (a step a trial reported before is ignored, as Optuna does). The
        pruner sees them at once; the storage by the next `flush`, at the latest FLUSH_AFTER_S
        after the oldest of them."""
        writer = self.writer
        for trial, step, reported in reports:
            if writer is None:
                trial.report(float(reported), step)
                continue
            if not writer.pending:
                self._since = time.monotonic()
            writer.add(trial, step, float(reported))
        if (
            writer is not None
            and writer.pending
            and time.monotonic() - self._since >= FLUSH_AFTER_S
        ):
            self.flush()

    def flush(self) -> None:
        """Writes the pending reports, all in one statement."""
        if self.writer is not None:
            self.writer.flush()


def _writer(engine: sa.Engine) -> IntermediateValues:
    from sweeps._optuna.intermediate import IntermediateValues

    return IntermediateValues(engine)


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

"""Pruning reports of every trial in flight, written together.

`Trial.report` stores each value in its own ORM session: the largest Optuna cost of a
sequential trial, and K sessions per checkpoint of a `--batch K` round. `Reports` hands the
values of a round to `sweeps._optuna.intermediate`, which keeps each `Trial`'s own copy up to
date at once (that copy is what the pruner reads) and inserts them into Optuna's table when
the round's trials end (before they are told), or sooner if they have waited FLUSH_AFTER_S.

That writes another program's schema, so it is used only where `sweeps._optuna.fenced`
allows it: an RDB storage at a schema revision its tests ran on, and an Optuna that still
has the private names it uses; anything else (or SWEEPS_OPTUNA_PUBLIC=1) gets `Trial.report`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import optuna
import sqlalchemy as sa

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

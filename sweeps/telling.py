"""Telling Optuna how a round's trials ended, once their records are written.

Optuna learns a trial's end only after its MLflow run and results row are written, and only
for the trials this worker still owns (`sweeps.fencing`). With Optuna's tables at hand
(`sweeps._optuna.tell`), a round's tell takes three steps:

1. Decide (`decide`, in the study process): each trial's state, value and user attributes
   (its record kept for repair, the data version it was trained on, the trial whose result
   it took); the sampler is told and the rows to store computed.
2. Write (`write_round`): the records (`Recorder.write`), then, in one transaction, the
   tell of the trials those writes kept. The same function runs in the study process or in
   the recording process while the next round trains (`sweeps.recording_process`).
3. Learn (`learn`): the trials as told, those the fence dropped, and those another worker
   ended between the record and the tell.

Without them, each recorded trial is told through `study.tell` (`tell_public`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial

from sweeps._optuna import Told, preview
from sweeps.attr_keys import DATA_VERSION_ATTR, RECORD_ATTR, REUSED_ATTR, SHARE_ATTR
from sweeps.records import repair_info
from tracking.records import TrialRecord, TrialState

if TYPE_CHECKING:
    from sweeps._optuna.tell import BulkTeller, TellRow, Written

OPTUNA_STATE = {
    TrialState.COMPLETE: optuna.trial.TrialState.COMPLETE,
    TrialState.PRUNED: optuna.trial.TrialState.PRUNED,
    TrialState.FAIL: optuna.trial.TrialState.FAIL,
}


INTERRUPTED = "interrupted"  # the error of a trial a stop (Ctrl-C, SIGTERM) cut short


@dataclass(frozen=True)
class Provenance:
    """What every trial a worker tells keeps of where it came from: the version of the
    data it trained on (`sweeps.data_pins`; a result is reused only from a trial of the
    same data) and the share of a launch it counts toward (`sweeps.shares`)."""

    data_version: str | None = None
    share: str | None = None


def user_attrs(rec: TrialRecord, origin: Provenance) -> dict[str, object]:
    """What a told trial keeps as user attributes: its record (for repair), its
    provenance and, if it took an earlier trial's result, which one. A trial a stop cut
    short does not count toward the share: a restarted worker runs another in its place."""
    attrs: dict[str, object] = {RECORD_ATTR: repair_info(rec)}
    if origin.data_version is not None:
        attrs[DATA_VERSION_ATTR] = origin.data_version
    if origin.share is not None and rec.error != INTERRUPTED:
        attrs[SHARE_ATTR] = origin.share
    if rec.reused_from is not None:
        attrs[REUSED_ATTR] = rec.reused_from
    return attrs


@dataclass(frozen=True)
class Decided:
    """A round's tell, decided: its records and trials, each trial's end (`told`) and the
    rows that store it (`rows`, which pickle: the recording process writes them)."""

    recs: list[TrialRecord]
    trials: list[optuna.Trial]
    told: list[Told]
    rows: list[TellRow]

    def previews(self) -> list[FrozenTrial]:
        """The trials as they will be once told."""
        return [preview(t) for t in self.told]


def decide(
    study: optuna.Study,
    teller: BulkTeller,
    recs: list[TrialRecord],
    trials: list[optuna.Trial],
    origin: Provenance,
) -> Decided:
    """Step 1: each trial's end; the sampler told (as `Study.tell` tells it)."""
    told = [
        Told(trial, OPTUNA_STATE[rec.state], rec.value, user_attrs(rec, origin))
        for rec, trial in zip(recs, trials, strict=True)
    ]
    return Decided(recs, trials, told, teller.ended(study, told))


@dataclass(frozen=True)
class RoundWritten:
    """What `write_round` wrote: each record's MLflow run (None: none written), the tell,
    and the trials the fence dropped (`sweeps.fencing`), which were not told."""

    run_ids: list[str | None]
    told: Written
    lost: list[int]


def write_round(
    write: Callable[[list[TrialRecord]], list[TrialRecord]],
    teller: BulkTeller,
    recs: list[TrialRecord],
    rows: list[TellRow],
) -> RoundWritten:
    """Step 2: the records (`write`, which returns those it kept), then Optuna's tell of
    those only."""
    done = {rec.number: rec for rec in write(recs)}
    told = teller.write([row for rec, row in zip(recs, rows, strict=True) if rec.number in done])
    run_ids = [done[rec.number].mlflow_run_id if rec.number in done else None for rec in recs]
    return RoundWritten(run_ids, told, [rec.number for rec in recs if rec.number not in done])


@dataclass(frozen=True)
class Learned:
    """A round once written and told (step 3)."""

    recorded: list[TrialRecord]  # the records written, with their MLflow runs
    dropped: list[optuna.Trial]  # not written: the fence found them another worker's
    taken: list[optuna.Trial]  # written, but another worker ended them before the tell
    trials: list[optuna.Trial]  # every trial written (taken ones included) ...
    ended: list[FrozenTrial]  # ... and each as the storage now has it


def learn(teller: BulkTeller, decided: Decided, written: RoundWritten) -> Learned:
    lost = set(written.lost)
    keep = [i for i, rec in enumerate(decided.recs) if rec.number not in lost]
    recorded = [
        rec if run_id is None else dataclasses.replace(rec, mlflow_run_id=run_id)
        for rec, run_id in ((decided.recs[i], written.run_ids[i]) for i in keep)
    ]
    told = [decided.told[i] for i in keep]
    rows = [decided.rows[i] for i in keep]
    trials = [decided.trials[i] for i in keep]
    taken = [
        t for t, row in zip(trials, rows, strict=True) if row.trial_id not in written.told.trial_ids
    ]
    return Learned(
        recorded,
        [t for t in decided.trials if t.number in lost],
        taken,
        trials,
        teller.as_told(told, rows, written.told),
    )


def tell_public(
    study: optuna.Study, rec: TrialRecord, trial: optuna.Trial, origin: Provenance
) -> FrozenTrial | None:
    """One recorded trial told through Optuna's public API; None when another worker
    ended it first."""
    for key, value in user_attrs(rec, origin).items():
        trial.set_user_attr(key, value)
    value = rec.value if rec.state is TrialState.COMPLETE else None
    try:
        return study.tell(trial, value, state=OPTUNA_STATE[rec.state])
    except optuna.exceptions.UpdateFinishedTrialError:
        return None


def bulk_teller(engine: sa.Engine) -> BulkTeller:
    from sweeps._optuna.tell import BulkTeller

    return BulkTeller(engine)

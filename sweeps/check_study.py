"""`sweeps check`: do Optuna, the results table and MLflow agree one to one?

Each finished Optuna trial must have exactly one results row and one MLflow child run, in
the same state, no MLflow run may be left RUNNING, and no trial may stay RUNNING after its
worker is lost (`sweeps.storage.lost_trials`). `repair` fixes what it can: lost trials are
failed and retried as Optuna retries heartbeat-stale ones, missing rows are rebuilt from the
record kept on the Optuna trial, states follow Optuna, missing MLflow runs are created
(without history), orphaned RUNNING runs are closed; a confirmation row without its
MLflow run gets it again (from the row: final values, no history), a confirmation run
without a row is deleted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna

from sweeps.attr_keys import CONFIG_ATTR
from sweeps.lookup import require_storage
from sweeps.recording import Recorder
from sweeps.records import record_from_trial
from sweeps.storage import Stores, close_storage, fail_trial, lost_trials, open_storage
from sweeps.study import config_from_stored
from tracking.records import RUN_STATUS, TrialRecord, TrialState
from tracking.results.confirmations import key_of

if TYPE_CHECKING:
    from tracking.mlflow_runs import MlflowTracker, RunSummary


@dataclass
class CheckReport:
    study: str
    optuna_finished: int = 0
    results_rows: int = 0
    mlflow_runs: int = 0
    confirmation_rows: int = 0  # `sweeps confirm`'s runs: each row has exactly one MLflow run
    confirmation_runs: int = 0
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return not self.problems or len(self.repaired) == len(self.problems)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "consistent": self.consistent}


def check_study(
    name: str, stores: Stores, *, repair: bool = False, track: bool = True
) -> CheckReport:
    require_storage(stores, name)  # checking reads the storage: it creates none
    storage = open_storage(stores.storage)
    try:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            from sweeps.errors import UnknownStudyError

            raise UnknownStudyError(f"no study named {name!r} in this storage") from None
        recorder = Recorder(stores, name, track=track)
        try:
            return _Checker(study, storage, recorder, repair).run()
        finally:
            recorder.close()
    finally:  # nothing stays connected once the call returns
        close_storage(storage)


@dataclass
class _Checker:
    study: optuna.Study
    storage: optuna.storages.RDBStorage
    recorder: Recorder
    repair: bool
    report: CheckReport = field(init=False)

    def __post_init__(self) -> None:
        self.report = CheckReport(self.study.study_name)

    def problem(self, message: str, fix: Any = None) -> None:
        self.report.problems.append(message)
        if self.repair and fix is not None:
            fix()
            self.report.repaired.append(message)

    def run(self) -> CheckReport:
        # First, so that a repaired (failed) lost trial is then checked like any other.
        for lost in lost_trials(self.study, self.storage):
            self.problem(
                f"trial {lost.number}: RUNNING, but its worker is lost (no heartbeat)",
                lambda t=lost: fail_trial(self.study, self.storage, t),
            )
        trials = {
            t.number: t for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()
        }
        self.report.optuna_finished = len(trials)
        rows = self.recorder.results.trial_numbers(self.study.study_name)
        self.report.results_rows = len(rows)
        stored = self.study.user_attrs.get(CONFIG_ATTR)
        cfg = config_from_stored(stored) if stored else None
        name = self.study.study_name
        records = {n: record_from_trial(name, t, cfg) for n, t in trials.items()}
        for number, rec in sorted(records.items()):
            if number not in rows:
                self.problem(
                    f"trial {number}: no results row",
                    lambda r=rec: self.recorder.results.record_trial(r),
                )
            elif rows[number] != rec.state.value:
                self.problem(
                    f"trial {number}: results row says {rows[number]}, Optuna {rec.state.value}",
                    lambda r=rec: self.recorder.results.record_trial(r, replace=True),
                )
        for number in sorted(set(rows) - set(trials)):
            self.problem(f"trial {number}: results row but the Optuna trial is not finished")
        self._check_mlflow(records)
        self._check_confirmations()
        return self.report

    def _check_confirmations(self) -> None:
        """Each confirmation row has exactly one confirmation run and each run a row;
        --repair deletes the runs no row names (a confirm killed between its writes)."""
        rows = self.recorder.results.confirmation_records(self.study.study_name)
        self.report.confirmation_rows = len(rows)
        tracker = self.recorder.mlflow
        parent = None if tracker is None else self.recorder.find_parent(create=False)
        if tracker is None or parent is None:
            return
        runs = tracker.confirmation_runs(parent.experiment_id)
        self.report.confirmation_runs = sum(len(v) for v in runs.values())
        by_key = {key_of(rec): rec for rec in rows}
        named = {key: rec.mlflow_run_id for key, rec in by_key.items()}
        for key, run_id in sorted(named.items()):
            what = f"confirmation of trial {key[0]} on seed {key[1]} (data seed {key[2]})"
            found = runs.get(key, [])
            if not found:
                self.problem(
                    f"{what}: no MLflow run",
                    lambda r=by_key[key]: self._recreate_confirmation(tracker, r),
                )
            elif len(found) > 1:
                extra = [r for r in found if r != run_id] if run_id in found else found[:-1]
                self.problem(
                    f"{what}: {len(found)} MLflow runs",
                    lambda ids=extra: tracker.delete_runs(ids),
                )
        for key in sorted(set(runs) - set(named)):
            self.problem(
                f"confirmation run(s) of trial {key[0]} on seed {key[1]}: no results row",
                lambda ids=runs[key]: tracker.delete_runs(ids),
            )

    def _check_mlflow(self, records: dict[int, TrialRecord]) -> None:
        tracker = self.recorder.mlflow
        if tracker is None:
            return
        # In the tracking store being checked, by the study's identity: a store that lacks
        # the study's experiment (another or a new store) lacks every run.
        parent = self.recorder.find_parent(create=False)
        if parent is None:
            for number, rec in sorted(records.items()):
                self.problem(
                    f"trial {number}: no MLflow run (the study has no experiment here)",
                    lambda r=rec: self._recreate(tracker, r),
                )
            return
        runs = tracker.trial_runs(parent.experiment_id)
        self.report.mlflow_runs = sum(len(v) for v in runs.values())
        row_runs = {
            int(row["number"]): row.get("mlflow_run_id")
            for row in self.recorder.results.trials(self.study.study_name)
        }
        for number, rec in sorted(records.items()):
            found = runs.get(number, [])
            want = RUN_STATUS[rec.state]
            if not found:
                self.problem(
                    f"trial {number}: no MLflow run",
                    lambda r=rec: self._recreate(tracker, r),
                )
                continue
            if len(found) > 1:
                # A worker killed while logging leaves its open run behind, and the trial
                # is then recorded again when its heartbeat goes stale: keep the run the
                # results row names (else the newest), delete the others.
                keep = _run_to_keep(found, row_runs.get(number))
                extra = [run.run_id for run in found if run is not keep]
                self.problem(
                    f"trial {number}: {len(found)} MLflow runs",
                    lambda ids=extra: tracker.delete_runs(ids),
                )
                found = [keep]
            for run in found:
                if run.status != want:
                    self.problem(
                        f"trial {number}: MLflow run {run.run_id} is {run.status}, expected {want}",
                        lambda rid=run.run_id, s=want, st=rec.state: self._retag(
                            tracker, rid, s, st
                        ),
                    )
        for number in sorted(set(runs) - set(records)):
            for run in runs[number]:
                if run.status == "RUNNING":
                    self.problem(
                        f"trial {number}: MLflow run {run.run_id} RUNNING for an unfinished trial",
                        lambda rid=run.run_id: tracker.terminate(rid, "FAILED"),
                    )

    def _recreate(self, tracker: MlflowTracker, rec: TrialRecord) -> None:
        if self.recorder.parent is None:
            self.recorder.parent = self.recorder.find_parent(create=True)
        assert self.recorder.parent is not None
        run_id = tracker.log_trial(self.recorder.parent, rec)
        self.recorder.results.record_trial(
            dataclasses.replace(rec, mlflow_run_id=run_id), replace=True
        )

    def _recreate_confirmation(self, tracker: MlflowTracker, rec: TrialRecord) -> None:
        """The run again from its row (final values only), and the row pointed at it."""
        if self.recorder.parent is None:
            self.recorder.parent = self.recorder.find_parent(create=True)
        assert self.recorder.parent is not None
        (run_id,) = tracker.log_confirmations(self.recorder.parent, [rec])
        self.recorder.results.set_confirmation_run(rec.study, key_of(rec), run_id)

    @staticmethod
    def _retag(tracker: MlflowTracker, run_id: str, status: str, state: TrialState) -> None:
        tracker.terminate(run_id, status)
        tracker.set_state_tag(run_id, state.value)


def _run_to_keep(found: list[RunSummary], row_run_id: str | None) -> RunSummary:
    """The run the results row points to; else the newest (`found` is oldest first)."""
    return next((run for run in found if run.run_id == row_run_id), found[-1])

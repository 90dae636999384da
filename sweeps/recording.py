"""The sweep's side of tracking: one MLflow child run and one results row per trial, and
the study's MLflow experiment and parent run (`Recorder`).

MLflow is optional per process (`track=False`) and imported only when on: a study that is
not tracked does not wait for MLflow to load.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sweeps import killpoints
from sweeps.attr_keys import EXPERIMENT_ATTR, PARENT_ATTR
from sweeps.config import SweepConfig
from sweeps.errors import mask_secrets
from sweeps.fencing import Fence, fence_of, lost_message
from sweeps.records import parent_params, record_from_row, record_from_trial
from sweeps.storage import Stores
from tracking import connections
from tracking.errors import TrackingError
from tracking.records import (
    EVERY_EPOCH,
    LARGE_ROUND,
    RUN_STATUS,
    HistoryPolicy,
    StudyRecord,
    TrialRecord,
    TrialState,
)
from tracking.results import ResultsStore

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from sweeps.recording_process import RecordingProcess
    from tracking.mlflow_runs import MlflowTracker, ParentRef


def make_tracker(stores: Stores) -> MlflowTracker:
    from tracking.mlflow_runs import MlflowTracker
    from tracking.server import check_reachable

    check_reachable(stores.tracking_uri)
    if stores.artifact_root is not None:
        stores.make_home()
    return MlflowTracker(stores.tracking_uri, stores.artifact_root)


class Recorder:
    """Writes finished trials exactly once to MLflow (when tracking) and the results table."""

    def __init__(self, stores: Stores, study: str, *, track: bool = True) -> None:
        self.stores = stores
        self.study = study
        self.results = ResultsStore(stores.storage)
        self.mlflow: MlflowTracker | None = make_tracker(stores) if track else None
        self.parent: ParentRef | None = None
        self.cfg: SweepConfig | None = None
        self._best: float | None = None  # the best value this process showed
        self._finished = 0
        self._ahead: _Drawn | None = None  # the end's figures, drawn while it was written
        self.fence: Fence | None = None  # who owns the study's trials (`attach`)
        self.untracked: set[int] = set()  # trials recorded here that got no MLflow run
        self._said: set[str] = set()  # the kinds of MLflow failure warned of

    @property
    def tracked(self) -> bool:
        """Whether trials get MLflow runs, which alone keep their weights and per-epoch
        history."""
        return self.mlflow is not None

    def refuse_foreign_experiment(self) -> None:
        """Before the study is created or resumed: refuse (TrackingError) a tracking store
        whose experiment of this name belongs to another study — any claimed one, when the
        study does not exist here yet — so that nothing is written for a run that cannot
        be tracked."""
        if self.mlflow is None:
            return
        # The owner first: a process creating this study registers it (its uid) before it
        # claims the experiment, so a claim seen here has its study visible below.
        owner = self.mlflow.experiment_owner(self.study)
        uid = self.results.find_study_uid(self.study)
        if owner is not None and owner != uid:
            self.mlflow.ensure_experiment(self.study, uid or "a study not yet created")

    def claim_experiment(self, cfg: SweepConfig) -> None:
        """For a study not yet in this storage, before its Optuna study is created: register
        it (its uid) and claim its MLflow experiment. A study of the same name in another
        storage that claimed the experiment since `refuse_foreign_experiment` wins: this
        registration is removed and the refusal (TrackingError) raised, nothing left here."""
        if self.mlflow is None:
            return
        registered = self.results.find_study_uid(self.study) is not None
        self._register(cfg)
        try:
            self.mlflow.ensure_experiment(self.study, self.results.study_uid(self.study))
        except TrackingError:
            if not registered:
                self.results.forget_study(self.study)
            raise

    def _register(self, cfg: SweepConfig) -> None:
        self.results.ensure_schema()
        self.results.register_study(
            StudyRecord(name=cfg.study, task=cfg.base.task, config=cfg.as_dict())
        )

    def attach(self, cfg: SweepConfig, study: optuna.Study) -> None:
        """Register the study; the first process to do so creates the MLflow parent run."""
        self.cfg = cfg
        self.fence = fence_of(study)
        self._register(cfg)
        if self.mlflow is None:
            return
        self.parent = self.find_parent(create=True)
        assert self.parent is not None
        if study.user_attrs.get(PARENT_ATTR) != self.parent.run_id:
            study.set_user_attr(EXPERIMENT_ATTR, self.parent.experiment_id)
            study.set_user_attr(PARENT_ATTR, self.parent.run_id)

    def find_parent(self, *, create: bool) -> ParentRef | None:
        """The study's experiment and parent run in the tracking store being written, found
        by the study's identity (`ResultsStore.study_uid`), never by ids another store
        gave out; created there when missing and `create` (else None). The results row
        then names them."""
        from tracking.mlflow_runs import ParentRef

        assert self.mlflow is not None
        name = self.study
        stored = self.results.get_study(name)
        uid = self.results.study_uid(name)
        if not create and self.mlflow.find_experiment(name, uid) is None:
            return None
        experiment_id = self.mlflow.ensure_experiment(name, uid)
        parent_id = self.mlflow.find_parent_run(experiment_id, stored.mlflow_parent_run_id)
        if parent_id is None and not create:
            return None
        if parent_id is None:
            mlflow = self.mlflow
            params = parent_params(self.cfg, name)
            parent_id = self.results.attach_parent(
                name,
                experiment_id,
                stored.mlflow_parent_run_id,
                lambda: mlflow.create_parent_run(experiment_id, name, *params).run_id,
            )
        elif (stored.mlflow_experiment_id, stored.mlflow_parent_run_id) != (
            experiment_id,
            parent_id,
        ):
            self.results.set_study_mlflow(name, experiment_id, parent_id)
        return ParentRef(experiment_id, parent_id)

    def write(self, recs: list[TrialRecord]) -> list[TrialRecord]:
        """MLflow first (to learn the run ids), then the results rows, of the trials this
        worker still owns (`sweeps.fencing`): those are returned, the others warned of.
        Never raises for MLflow: a lost MLflow write is warned of and left for `sweeps
        check --repair`."""
        fence = self.fence
        owned = recs if fence is None else fence.owned(self.results, recs)
        killpoints.passing(killpoints.OWNED)
        if self.mlflow is not None and self.parent is not None:
            history = self.cfg.history_policy if self.cfg is not None else EVERY_EPOCH
            owned = self._log(self.mlflow, self.parent, owned, history)
            killpoints.passing("logged")
        if fence is None:
            self.results.record_trials(owned)
            written = owned
        else:
            written = self.results.record_guarded(owned, fence.guard(self._discard))
        killpoints.passing("recorded")
        kept = {rec.number for rec in written}
        if lost := [rec.number for rec in recs if rec.number not in kept]:
            warn(lost_message(lost))
        return written

    def _discard(self, run_ids: list[str]) -> None:
        """Delete runs made for trials this worker turned out not to own."""
        if self.mlflow is None or not run_ids:
            return
        try:
            self.mlflow.delete_runs(run_ids)
        except Exception as e:  # `sweeps check` then lists them, `--repair` deletes them
            warn(f"could not delete the MLflow runs of trials this worker lost: {e}")

    def start_writer(self) -> RecordingProcess | None:
        """A process writing this recorder's rounds while the next one trains, where one
        can be had safely (`RecordingProcess.start`), else None."""
        from sweeps.recording_process import RecordingProcess

        return RecordingProcess.start(self)

    def forkable(self) -> bool:
        """Whether a forked process can write this recorder's rounds: its fence reads
        over the writer's own connection, and a tracked round's writes all go straight
        into MLflow's SQL store (the child never opens an MlflowClient, whose cached
        engines were made before the fork)."""
        if self.fence is not None and not self.fence.forkable:
            return False  # its public reads hold the study process's connections
        mlflow = self.mlflow
        return mlflow is None or (
            self.parent is not None and mlflow.writes_in_bulk(self.parent.experiment_id)
        )

    def reopened(self) -> Recorder:
        """A recorder of the same study, parent run and fence with connections of its own:
        the recording process's, made after the fork."""
        writer = Recorder(self.stores, self.study, track=self.tracked)
        writer.parent, writer.cfg, writer.fence = self.parent, self.cfg, self.fence
        return writer

    def show_best(self, recs: list[TrialRecord]) -> None:
        """The parent run shows the best trial as it improves (this process's view; the
        parent keeps the better of several workers')."""
        self._finished += len(recs)
        if self.mlflow is not None and self.parent is not None:
            self.untracked.update(r.number for r in recs if r.mlflow_run_id is None)
        done = [r for r in recs if r.state is TrialState.COMPLETE and r.value is not None]
        if self.mlflow is None or self.parent is None or not done:
            return
        best = min(done, key=lambda r: r.value if r.value is not None else math.inf)
        value = best.value if best.value is not None else math.inf
        if self._best is not None and self._best <= value:
            return
        self._best = best.value
        try:
            self.mlflow.log_best(self.parent, best, self._finished)
        except Exception as e:  # cosmetic: the study goes on
            warn(f"could not show the best trial on the parent run: {e}")

    def _log(
        self,
        mlflow: MlflowTracker,
        parent: ParentRef,
        recs: list[TrialRecord],
        history: HistoryPolicy,
    ) -> list[TrialRecord]:
        """One bulk write for the whole round (one transaction into a SQL store)."""
        try:
            run_ids = mlflow.log_trials(parent, recs, history, archive=len(recs) >= LARGE_ROUND)
        except Exception as e:  # the trials themselves are fine; keep them in Optuna and SQL
            self._said_once(e, "MLflow logging failed for trial(s)", recs)
            return recs
        return [
            dataclasses.replace(rec, mlflow_run_id=run_id)
            for rec, run_id in zip(recs, run_ids, strict=True)
        ]

    def _said_once(self, e: Exception, what: str, recs: list[TrialRecord]) -> None:
        """Warn of an MLflow failure the first time its kind (the exception's, or
        the one it wraps) happens in this process: a store that stays broken fails every
        round alike, and the command's end counts the trials (`untracked_message`)."""
        cause = e.__cause__ or e
        kind = f"{type(cause).__module__}.{type(cause).__qualname__}"
        if kind in self._said:
            return
        self._said.add(kind)
        numbers = ", ".join(str(rec.number) for rec in recs)
        warn(f"{what} {numbers}: {e}")
        warn(
            "they are kept in Optuna and SQL, and `sweeps check --repair` adds their runs;"
            " later failures of this kind are counted at the end"
        )

    def heal(self, rec: TrialRecord) -> TrialRecord:
        """Record a trial that Optuna ended without its worker (lost: `rec` is its FAIL),
        whatever that worker wrote before it died: its MLflow run, if any, is kept and
        brought to Optuna's state (duplicates deleted), else one is created; its results
        row is written or replaced. So a plain resume leaves every trial exactly once in
        Optuna, the results table and MLflow, in the same state."""
        # The writer's turn before the trial's lock: the recording process takes them in
        # that order, and may be writing this very trial (`tracking.connections`).
        with connections.turn():
            return self._heal(rec)

    def _heal(self, rec: TrialRecord) -> TrialRecord:
        if self.fence is None:
            rec = self._heal_mlflow(rec)
            self.results.record_trial(rec, replace=True)
            return rec
        # The trial locked throughout, against a late writer's guard (`sweeps.fencing`).
        healing = self.fence.locking(self._heal_mlflow)
        return self.results.record_guarded([rec], healing, replace=True)[0]

    def _heal_mlflow(self, rec: TrialRecord) -> TrialRecord:
        if self.mlflow is None or self.parent is None:
            return rec
        try:
            rec = self._heal_run(self.mlflow, self.parent, rec)
        except Exception as e:  # as `write`: the trial stays in Optuna and SQL
            self._said_once(e, "MLflow healing failed for trial", [rec])
        if rec.mlflow_run_id is None:
            self.untracked.add(rec.number)
        return rec

    def _heal_run(self, mlflow: MlflowTracker, parent: ParentRef, rec: TrialRecord) -> TrialRecord:
        found = mlflow.trial_runs(parent.experiment_id, rec.number).get(rec.number, [])
        if not found:
            return self._log(mlflow, parent, [rec], EVERY_EPOCH)[0]
        keep, extra = found[-1], [run.run_id for run in found[:-1]]  # oldest first
        if extra:
            mlflow.delete_runs(extra)
        mlflow.terminate(keep.run_id, RUN_STATUS[rec.state])
        mlflow.set_state_tag(keep.run_id, rec.state.value)
        return dataclasses.replace(rec, mlflow_run_id=keep.run_id)

    def draw_ahead(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        """The end's figures (Optuna's plots, the λ figure) of the study as `trials` make
        it: every finished trial as it will be once the last round is told, drawn while
        the recording process writes that round, instead of after it. `finish` uses them
        if the results store then holds exactly these trials, and draws them again
        otherwise."""
        if self.mlflow is None or self.parent is None:
            return
        from sweeps.plots import optuna_plots
        from tracking.figures import lambda_figure
        from tracking.mlflow_runs import LAMBDA_FIGURE

        records = [record_from_trial(self.study, t, self.cfg) for t in trials]
        try:
            figures = {**optuna_plots(study, trials), LAMBDA_FIGURE: lambda_figure(records)}
        except Exception:  # cosmetic, and `finish` draws them again, saying what failed
            return
        self._ahead = _Drawn(frozenset(t.number for t in trials), figures)

    def finish(self, study: optuna.Study) -> None:
        """Parent run: the λ figure, a trials CSV and Optuna's plots; then FINISHED."""
        if self.mlflow is None or self.parent is None:
            return
        from sweeps.plots import optuna_plots

        records = [record_from_row(self.study, row) for row in self.results.trials(self.study)]
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead.numbers == {r.number for r in records}:
            figures = ahead.figures
        else:  # nothing drawn ahead, or trials finished since (another worker's)
            figures = optuna_plots(study)
        try:
            self.mlflow.finish_study(self.parent, records, figures)
        except Exception as e:
            warn(f"could not finish the MLflow parent run: {e}")
        self._complete_best_curves()

    def _complete_best_curves(self) -> None:
        """The best trial of each penalty shows every epoch as metrics, whatever --history
        thinned, and has its own files, wherever its round archived them (the other trials
        keep theirs in history.csv, or in their round's archive)."""
        if self.mlflow is None or self.cfg is None:
            return
        mlflow = self.mlflow
        try:
            run_ids = [row["mlflow_run_id"] for row in self.results.best(self.study)]
            # One process at a time: two ending together would both find the same points
            # missing and both write them.
            with self.results.study_lock(self.study, "curves"):
                mlflow.complete_curves(
                    [r for r in run_ids if r],
                    on_read=lambda: killpoints.passing(killpoints.CURVES_READ),
                )
        except Exception as e:
            warn(f"could not log the best trials' whole curves: {e}")

    def stale_trial_callback(
        self, retry: Callable[[optuna.Study, FrozenTrial], None]
    ) -> Callable[[optuna.Study, FrozenTrial], None]:
        """Record a trial whose worker died (failed by heartbeat), then retry its params."""

        def on_stale(study: optuna.Study, trial: FrozenTrial) -> None:
            self.heal(record_from_trial(self.study, trial, self.cfg))
            retry(study, trial)

        return on_stale

    def close(self) -> None:
        self.results.dispose()
        if self.mlflow is not None:
            self.mlflow.close()


@dataclasses.dataclass(frozen=True)
class _Drawn:
    """Figures for the parent run, and the trials (by number) they were drawn of."""

    numbers: frozenset[int]
    figures: dict[str, bytes]


EXIT_UNTRACKED = 1  # the exit code of a command some of whose trials got no MLflow run


def untracked_message(numbers: Sequence[int]) -> str:
    """The closing line of a command whose MLflow writes failed for these trials."""
    shown = ", ".join(str(n) for n in sorted(numbers)[:10]) + (", …" if len(numbers) > 10 else "")
    return (
        f"{len(numbers)} trial(s) have no MLflow run ({shown}): MLflow's writes failed (said"
        " above); they are kept in Optuna and the results table, and `sweeps check --repair`"
        " adds their runs"
    )


def warn(message: str) -> None:
    """A warning of the study's: a record of the `sweeps` logger (the `sweeps` command
    prints it as one line on stderr)."""
    logging.getLogger("sweeps").warning("%s", mask_secrets(message))

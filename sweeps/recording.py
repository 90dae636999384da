"""The sweep's side of tracking: one MLflow child run and one results row per trial.

MLflow is optional per process (`track=False`) and imported only when on: a study that is
not tracked should not wait for MLflow to load (the README has the figures).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sweeps import killpoints
from sweeps.config import SweepConfig
from sweeps.errors import SweepsError, mask_secrets
from sweeps.fencing import Fence, fence_of, lost_message
from sweeps.storage import Stores
from tracking import connections
from tracking.errors import TrackingError
from tracking.records import (
    EVERY_EPOCH,
    FINAL_METRICS,
    LARGE_ROUND,
    METRICS,
    RUN_STATUS,
    HistoryPolicy,
    StudyRecord,
    TrialRecord,
    TrialState,
)
from tracking.results import ResultsStore

if TYPE_CHECKING:
    import optuna
    import sqlalchemy as sa
    from optuna.trial import FrozenTrial

    from sweeps._optuna.tell import BulkTeller, TellRow, Written
    from tracking.mlflow_runs import MlflowTracker, ParentRef

PARENT_ATTR = "mlflow_parent_run_id"
EXPERIMENT_ATTR = "mlflow_experiment_id"


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
        self._said: set[str] = set()  # the kinds of MLflow failure said on stderr

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
            parent = self.mlflow.create_parent_run(
                experiment_id, name, *_parent_params(self.cfg, name)
            )
            won = self.results.set_study_mlflow(
                name, experiment_id, parent.run_id, expected=stored.mlflow_parent_run_id
            )
            if not won:  # another process attached its parent meanwhile: keep that one
                self.mlflow.delete_runs([parent.run_id])
                return self.find_parent(create=create)
            parent_id = parent.run_id
        elif (stored.mlflow_experiment_id, stored.mlflow_parent_run_id) != (
            experiment_id,
            parent_id,
        ):
            self.results.set_study_mlflow(name, experiment_id, parent_id, replace=True)
        return ParentRef(experiment_id, parent_id)

    def record(self, rec: TrialRecord) -> TrialRecord:
        """One finished trial: see `record_many`."""
        return self.record_many([rec])[0]

    def record_many(self, recs: list[TrialRecord]) -> list[TrialRecord]:
        """MLflow first (to learn the run ids), then the results rows. Never raises for
        MLflow: a lost MLflow write is reported and left for `sweeps check --repair`."""
        recs = self.write(recs)
        self.show_best(recs)
        return recs

    def write(self, recs: list[TrialRecord]) -> list[TrialRecord]:
        """`record_many`'s writes without showing the best: what a `RecordingProcess`
        does for the process that trained the trials (which then calls `show_best`).

        Only the trials this worker still owns are written and returned; the others are
        said on stderr (`sweeps.fencing`)."""
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

    def background(self) -> RecordingProcess | None:
        """A process writing this recorder's rounds while the next one trains, where one
        can be had safely (`RecordingProcess.start`), else None."""
        return RecordingProcess.start(self)

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
        """Say an MLflow failure on stderr the first time its kind (the exception's, or
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
        except Exception as e:  # as record_many: the trial stays in Optuna and SQL
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
        the recording process writes that round, instead of after it (0.1–0.25 s off a
        tracked study of 3 rounds of 512, measured). `finish` uses them if the results
        store then holds exactly these trials, and draws them again otherwise."""
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


RECORD_ATTR = "sweeps.record"  # the Optuna trial's user attribute holding repair_info


def keep(trial: optuna.Trial, rec: TrialRecord) -> TrialRecord:
    """Keep the recorded trial on the Optuna trial too, so `sweeps check --repair` can
    rebuild a lost results row or MLflow run from it."""
    trial.set_user_attr(RECORD_ATTR, repair_info(rec))
    return rec


def repair_info(rec: TrialRecord) -> dict[str, object]:
    return {
        "state": rec.state.value,
        "params": rec.params,
        "final": rec.final,
        "value": rec.value,
        "duration_s": rec.duration_s,
        "device": rec.device,
        "start_time_ms": rec.start_time_ms,
        "end_time_ms": rec.end_time_ms,
        "error": rec.error,
        "mlflow_run_id": rec.mlflow_run_id,
        "reused_from": rec.reused_from,
    }


def _parent_params(cfg: SweepConfig | None, study: str) -> tuple[dict[str, object], str]:
    """The parent run's params (the study's configuration, as `sweeps run` flags) and its
    description."""
    if cfg is None:
        return {}, ""
    params: dict[str, object] = {
        "penalties": ",".join(p.value for p in cfg.penalties),
        "lambda_min": cfg.lambda_min,
        "lambda_max": cfg.lambda_max,
        "lr_min": cfg.lr_min,  # None (left out) unless lr is searched
        "lr_max": cfg.lr_max,
        "sampler": cfg.sampler.value,
        "pruner": cfg.pruner.value,
        "report_every": cfg.checkpoint_every,
        "batch": cfg.batch,
        "repeats": cfg.repeats,
        "history": cfg.history.value,
        **{
            k: v
            for k, v in cfg.base.as_params().items()
            if k not in _PER_TRIAL and not (k == "lr" and cfg.searches_lr)
        },
    }
    lr = f"lr from {cfg.lr_min:g} to {cfg.lr_max:g} (log), " if cfg.searches_lr else ""
    description = (
        f"sweeps study `{study}`: {cfg.base.task}, penalties"
        f" {params['penalties']}, λ from {cfg.lambda_min:g} to {cfg.lambda_max:g} (log), {lr}"
        f"{cfg.sampler.value} sampler, {cfg.pruner.value} pruner, {cfg.base.epochs} epochs."
        " Each child run is one trial; this run holds the λ figure, the trials table and"
        " Optuna's plots when the study ends, and the best trial (tags sweeps.best_*)."
    )
    return {k: v for k, v in params.items() if v is not None}, description


# TrialConfig params that differ per trial (the child runs log them) or per process.
_PER_TRIAL = {"penalty", "lambda", "l1_ratio", "device"}


def record_from_row(study: str, row: Mapping[str, Any]) -> TrialRecord:
    """A results row back as a (history-less) TrialRecord, for figures and repair."""
    params = {k: row.get(k) for k in ("penalty", "lambda", "l1_ratio", "lr", "epochs", "seed")}
    return TrialRecord(
        study=study,
        number=int(row["number"]),
        state=TrialState(row["state"]),
        params=params,
        final={k: row.get(k) for k in FINAL_METRICS},
        value=row.get("value"),
        duration_s=float(row.get("duration_s") or 0.0),
        device=str(row.get("device") or ""),
        start_time_ms=0,
        end_time_ms=0,
        mlflow_run_id=row.get("mlflow_run_id"),
        error=row.get("error"),
        reused_from=row.get("reused_from"),
    )


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


def record_from_trial(
    study: str, trial: FrozenTrial, cfg: SweepConfig | None = None
) -> TrialRecord:
    """Rebuild a trial's record from what the objective kept on the Optuna trial.

    A trial whose worker died kept nothing: its config is rebuilt from its parameters.
    """
    kept: dict[str, Any] = trial.user_attrs.get(RECORD_ATTR) or {}
    state = TrialState(trial.state.name)
    params = kept.get("params")
    if params is None and cfg is not None:
        from optuna.trial import FixedTrial

        from sweeps.sampling import suggest

        params = suggest(FixedTrial(trial.params), cfg).as_params()
    if params is None:
        params = {"lambda": 0.0, **trial.params}
    start = int(trial.datetime_start.timestamp() * 1000) if trial.datetime_start else 0
    end = int(trial.datetime_complete.timestamp() * 1000) if trial.datetime_complete else start
    error = kept.get("error")
    if not kept and state is TrialState.FAIL:
        error = "worker lost: heartbeat stale"
    return TrialRecord(
        study=study,
        number=trial.number,
        state=state,
        params=params,
        final=kept.get("final") or dict.fromkeys(METRICS),
        value=trial.value if state is TrialState.COMPLETE else None,
        duration_s=float(kept.get("duration_s") or 0.0),
        device=str(kept.get("device") or ""),
        start_time_ms=int(kept.get("start_time_ms") or start),
        end_time_ms=int(kept.get("end_time_ms") or end),
        error=error,
        mlflow_run_id=kept.get("mlflow_run_id"),
        reused_from=kept.get("reused_from"),
    )


# --- recording beside training -------------------------------------------------------


RECORDING_ENV = "SWEEPS_RECORDING_PROCESS"  # "0": record every round in the study process
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class RecordingLost(SweepsError):
    """The recording process died (killed, out of memory): the rounds it had not finished
    stay RUNNING in Optuna, and a resume heals and retries them."""

    exit_code = 1


class RecordingFailed(SweepsError):
    """Writing a round failed in the recording process (as `record_many` would have
    raised in the study process)."""


class RecordingProcess:
    """Writes a round's MLflow runs (when tracked) and results rows in a child process,
    then tells Optuna the round's ends, while the study process asks and trains the next
    round.

    Why: on the CPU the writes of a tracked round cost more than training it, those of
    an untracked one ~9% of it, and two cores are common; a thread would hold the same
    interpreter lock as training. The child is forked (the imports are already paid)
    before any round's heartbeat thread runs, opens its own database connections (one
    must not cross a fork), and dies with its parent (PR_SET_PDEATHSIG), so a killed
    worker is killed whole and never leaves a writer behind to race a resume's healing.
    The order of one trial's writes is kept: MLflow, results row, Optuna's tell (the rows
    the study process decided, its sampler told: `sweeps._optuna.tell`). Linux only;
    `SWEEPS_RECORDING_PROCESS=0` turns it off.
    """

    def __init__(self, process: Any, conn: Any) -> None:
        self._process = process
        self._conn = conn

    @classmethod
    def start(cls, recorder: Recorder) -> RecordingProcess | None:
        """A child for `recorder`'s rounds; None where the child could not die with us, or
        where a tracked round's writes could not all go straight into MLflow's SQL store
        (the child never opens an MlflowClient, whose cached engines were made before the
        fork). An untracked study's child writes the results rows and tells Optuna."""
        if os.environ.get(RECORDING_ENV) == "0" or not sys.platform.startswith("linux"):
            return None
        if _prctl() is None:
            return None
        if recorder.fence is not None and not recorder.fence.forkable:
            return None  # its public reads hold the study process's connections
        mlflow = recorder.mlflow
        if mlflow is not None and (
            recorder.parent is None or not mlflow.writes_in_bulk(recorder.parent.experiment_id)
        ):
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
        # As numpy arrays: a tensor pickles ~25x slower.
        arrays = [None if w is None else {k: _array(v) for k, v in w.items()} for w in weights]
        try:
            self._conn.send((recs, arrays, tell))
        except OSError as e:
            raise self._lost() from e

    def result(self) -> tuple[list[str | None], Written, list[int]]:
        """The MLflow run ids of the submitted round (None for a trial not written), what
        its tell wrote and the trials the fence dropped (`sweeps.fencing`), once done."""
        try:
            while not self._conn.poll(0.2):
                if not self._process.is_alive():
                    raise self._lost()
            kind, payload = self._conn.recv()
        except (EOFError, OSError) as e:
            raise self._lost() from e
        if kind == "error":
            raise RecordingFailed(payload)
        ids, written, lost = payload
        return ids, written, lost

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


def _prctl() -> Callable[..., int] | None:
    import ctypes

    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


def _serve(recorder: Recorder, conn: Any, parents: Any, parent_pid: int) -> None:
    """The recording process: write each round received, answer its run ids."""
    import signal

    parents.close()
    prctl = _prctl()
    if prctl is None or prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return
    if os.getppid() != parent_pid:  # the parent died before the line above
        return
    # A stop sent to the whole process group (Ctrl-C; SIGTERM from `scancel` or a
    # preemption) is the parent's to handle: it records the interrupted round and tells
    # this process to finish, so the writes in hand are not cut short.
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, signal.SIG_IGN)
    connections.become_writer()
    writer = Recorder(recorder.stores, recorder.study, track=recorder.mlflow is not None)
    writer.parent, writer.cfg = recorder.parent, recorder.cfg
    writer.fence = recorder.fence
    teller = _teller(writer.results.engine)
    try:
        while (message := conn.recv()) is not None:
            recs, weights, tell = message
            try:
                recs = [
                    rec if w is None else dataclasses.replace(rec, weights=_serialized(w))
                    for rec, w in zip(recs, weights, strict=True)
                ]
                with connections.turn():  # the round's connections, then none
                    done = {rec.number: rec for rec in writer.write(recs)}
                    # Optuna learns only what was written: not the trials the fence dropped.
                    written = teller.write(
                        [row for rec, row in zip(recs, tell, strict=True) if rec.number in done]
                    )
            except Exception as e:
                conn.send(("error", mask_secrets(f"{type(e).__name__}: {e}")))
            else:
                ids = [done[r.number].mlflow_run_id if r.number in done else None for r in recs]
                lost = [rec.number for rec in recs if rec.number not in done]
                conn.send(("ok", (ids, written, lost)))
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


def serialize_weights(state_dict: Mapping[str, Any]) -> bytes:
    """A state_dict as `torch.save` writes it (MLflow keeps it as model_state_dict.pt)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(dict(state_dict), buffer)
    return buffer.getvalue()


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

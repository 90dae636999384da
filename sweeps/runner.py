"""What the Python API and the workers run: a study (`run_study`), a worker joining one
(`run_worker`); one training run outside any study is `sweeps.single_run`.

A study runs in this process or in `sweeps worker` processes started by a launcher. These functions
change nothing process-wide (logging, warning filters, the environment, the collector):
that is the caller's to decide, as the `sweeps` command does at its entry point.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState

from sweeps._optuna import fenced
from sweeps.config import SweepConfig
from sweeps.data_pins import DataFiles, hash_data, pin
from sweeps.errors import UsageError
from sweeps.fencing import EXIT_LOST
from sweeps.launchers import (
    Detachable,
    Launcher,
    LocalLauncher,
    WorkerPlan,
    WorkerReport,
    follow,
)
from sweeps.lifecycle import RoundOptimizer
from sweeps.lookup import require_storage
from sweeps.progress import Progress
from sweeps.recording import Recorder
from sweeps.shares import left_in_share, worker_devices, worker_plan
from sweeps.storage import (
    Stores,
    check_reachable,
    close_storage,
    fail_lost_trials,
    heartbeat_interval,
    open_storage,
)
from sweeps.study import check_space, create_or_load, load_existing, study_exists
from sweeps.telling import Provenance
from tracking.connections import release_idle
from tracking.reconnect import retrying
from trainer import (
    check_config,
    load_task,
    resolve_device,
)
from trainer.devices import device_label

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class RunOutcome:
    study: str
    requested: int
    counts: dict[str, int] = field(default_factory=dict)
    best: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    failed_workers: int = 0
    lost: list[int] = field(default_factory=list)  # trials another worker took over
    lost_workers: int = 0  # `--workers` processes that lost trials so (exit 3)
    untracked: list[int] = field(default_factory=list)  # trials that got no MLflow run
    reused: int = 0  # trials that took an identical earlier trial's result, not trained
    mlflow_experiment_id: str | None = None  # None when not tracked
    mlflow_parent_run_id: str | None = None
    workers: list[WorkerReport] = field(default_factory=list)  # where a launcher ran them
    job: str | None = None  # what names the detached workers (a Slurm job id)


def preflight(cfg: SweepConfig, *, devices: bool = True) -> None:
    """Everything that can be refused is refused before a study or directory exists (the
    devices only where this machine's are the workers': not where an engine places them)."""
    check_config(cfg.base)
    for spec in (cfg.devices or (cfg.base.device,)) if devices else ():
        resolve_device(spec)
    check_space(cfg)
    heartbeat_interval()  # a bad SWEEPS_HEARTBEAT_S, before the home is created


def run_study(
    cfg: SweepConfig,
    stores: Stores,
    *,
    track: bool = True,
    quiet: bool = False,
    create_only: bool = False,
    accept_data_change: bool = False,
    on_ready: Callable[[], None] = lambda: None,
    launcher: Launcher | None = None,
    detach: bool = False,
) -> RunOutcome:
    """Create or resume the study and run `cfg.trials` more trials (none with create_only).
    A resumed study whose data files changed is refused unless `accept_data_change`
    (`sweeps.data_pins`). `on_ready` is called once the stores are open and the study
    loaded, before the first trial (the CLI freezes the heap there). The trials run in
    `sweeps worker` processes started by `launcher` when one is given, else in local child
    processes with `cfg.workers` above 1, else in this process. With `detach` (a
    `Detachable` launcher's), the workers are started and left running: `RunOutcome.job`
    names them."""
    if detach and not isinstance(launcher, Detachable):
        raise UsageError("--detach needs a launcher whose workers outlive it (--launcher slurm)")
    chosen = launcher if launcher is not None or cfg.workers == 1 else LocalLauncher()
    placed = chosen is not None and chosen.places_devices
    if placed and cfg.devices:
        raise UsageError("--devices spreads local workers; this launcher gives each its GPUs")
    preflight(cfg, devices=not placed)
    if chosen is None or create_only:
        return _run_study(
            cfg, stores, None, track, quiet, create_only, accept_data_change, on_ready
        )
    try:
        chosen.prepare(stores, track)  # before anything is written
        return _run_study(
            cfg, stores, chosen, track, quiet, False, accept_data_change, on_ready, detach
        )
    finally:
        chosen.close()


def _run_study(
    cfg: SweepConfig,
    stores: Stores,
    launcher: Launcher | None,
    track: bool,
    quiet: bool,
    create_only: bool,
    accept_data_change: bool,
    on_ready: Callable[[], None],
    detach: bool = False,
) -> RunOutcome:
    """`run_study` once its launcher, if any, is ready."""
    data = hash_data(cfg.base)  # once, before any store is opened
    check_reachable(stores.storage)  # before the recorder creates the home for artifacts
    recorder = Recorder(stores, cfg.study, track=track)  # refuses an unreachable store
    storage = None
    try:
        recorder.refuse_foreign_experiment()  # before the storage's tables are created
        if stores.uses_home:
            stores.make_home()
        _before_storage(recorder)
        storage = open_storage(stores.storage, recorder.stale_trial_callback)
        recorder.results.share_engine(storage.engine)  # one storage connection (PostgreSQL)
        how = _Run(launcher, track, quiet, create_only, accept_data_change, on_ready, detach)
        return _run_opened(cfg, stores, recorder, storage, data, how)
    finally:  # nothing stays connected once the call returns (the Python API calls again)
        recorder.close()
        if storage is not None:
            close_storage(storage)
        release_idle()  # MLflow's connections too


@dataclass(frozen=True)
class _Run:
    """The options of `run_study` past the study and its stores."""

    launcher: Launcher | None
    track: bool
    quiet: bool
    create_only: bool
    accept_data_change: bool
    on_ready: Callable[[], None]
    detach: bool = False  # start the workers and leave them running (`Detachable`)


def _run_opened(
    cfg: SweepConfig,
    stores: Stores,
    recorder: Recorder,
    storage: optuna.storages.RDBStorage,
    data: DataFiles,
    how: _Run,
) -> RunOutcome:
    if not study_exists(cfg.study, storage):  # claimed first: a refused claim leaves no study
        recorder.claim_experiment(cfg)
    study = create_or_load(cfg, storage, data, accept_data_change=how.accept_data_change)
    recorder.attach(cfg, study)
    fail_lost_trials(study, storage)  # recorded, then retried: see run_worker
    outcome = RunOutcome(cfg.study, cfg.trials)
    reused_before = recorder.results.reused_count(cfg.study)
    progress = Progress(total=0 if how.create_only else cfg.trials, quiet=how.quiet)
    try:
        if how.create_only:
            pass
        elif how.launcher is None:
            how.on_ready()
            device = worker_devices(cfg)[0]
            outcome.lost = _optimize(
                study, cfg, recorder, cfg.trials, device, progress, data.digest
            )
        elif how.detach:
            assert isinstance(how.launcher, Detachable)
            how.launcher.start(worker_plan(cfg, stores, how.track, summarize=True))
            outcome.job = how.launcher.detach()
        else:
            plan = worker_plan(cfg, stores, how.track)
            codes = _run_processes(study, storage, plan, how.launcher, stores, progress, outcome)
            outcome.lost_workers = codes.count(EXIT_LOST)
            outcome.failed_workers = len(codes) - outcome.lost_workers
    except KeyboardInterrupt:
        outcome.interrupted = True
    finally:
        progress.close()
        if not how.create_only and outcome.job is None:  # detached: each worker draws them
            recorder.finish(study)
    outcome.counts = count_states(study, storage)
    outcome.untracked = sorted(recorder.untracked)
    outcome.reused = recorder.results.reused_count(cfg.study) - reused_before
    outcome.best = recorder.results.best(cfg.study, every_penalty=True)
    if recorder.parent is not None:
        outcome.mlflow_experiment_id = recorder.parent.experiment_id
        outcome.mlflow_parent_run_id = recorder.parent.run_id
    return outcome


def run_worker(
    study_name: str,
    stores: Stores,
    *,
    trials: int | None,
    device: str | None,
    track: bool = True,
    timeout: float | None = None,
    batch: int | None = None,
    quiet: bool = False,
    summarize: bool = True,
    worker_index: int | None = None,
    share_id: str | None = None,
    accept_data_change: bool = False,
    on_ready: Callable[[], None] = lambda: None,
) -> WorkerOutcome:
    """`sweeps worker`: join an existing study from any shell or machine (`on_ready` and
    `accept_data_change`: as in `run_study`). With `share_id` (a launched worker's,
    `sweeps.shares`), `trials` is a share of which those told under that id are done."""
    require_storage(stores, study_name)  # a worker joins a study: it creates no storage
    heartbeat_interval()  # a bad SWEEPS_HEARTBEAT_S, before the home is created
    index = os.getpid() if worker_index is None else worker_index
    # First, so that the storage's stale-trial callback records a trial before its retry.
    recorder = Recorder(stores, study_name, track=track)
    storage = None
    try:
        if recorder.mlflow is not None:  # first: a new MLflow store is made with 3 connections
            recorder.mlflow.open_store()
        _before_storage(recorder)
        storage = open_storage(stores.storage, recorder.stale_trial_callback)
        recorder.results.share_engine(storage.engine)  # one storage connection (PostgreSQL)
        study, cfg = load_existing(study_name, storage, index)
        data = hash_data(cfg.base)
        pin(study, data, accept_change=accept_data_change)
    except BaseException:
        recorder.close()
        if storage is not None:
            close_storage(storage)
        release_idle()
        raise
    if timeout is not None:
        cfg = replace(cfg, timeout=timeout)
    if batch is not None:
        cfg = replace(cfg, batch=batch)
    recorder.attach(cfg, study)
    # Trials failed for a lost worker are recorded (the storage's callback), then retried;
    # those lost already (including any that never got a heartbeat, which Optuna never
    # fails) are failed now.
    fail_lost_trials(study, storage)
    n = trials if trials is not None else cfg.trials
    if share_id is not None:
        free = cfg.per_penalty is None  # as `RoundOptimizer._free_reuses` counts them
        n = left_in_share(study, storage, share_id, n, reuses_free=free)
    progress = Progress(total=n, quiet=quiet)
    try:
        on_ready()
        spec = device or cfg.base.device
        lost = _optimize(study, cfg, recorder, n, spec, progress, data.digest, share_id)
        counts = count_states(study, storage)
    finally:
        progress.close()
        if summarize:  # refresh the parent run's figure with what the study has now
            recorder.finish(study)
        recorder.close()
        close_storage(storage)
        release_idle()  # MLflow's connections too: none stays open behind the call
    return WorkerOutcome(counts, lost, sorted(recorder.untracked))


def _before_storage(recorder: Recorder) -> None:
    """Nothing open when Optuna's storage is opened, which takes two connections for a
    moment (`sweeps.storage`): within the budget (`tracking.connections`)."""
    recorder.results.dispose()
    release_idle()


@dataclass(frozen=True)
class WorkerOutcome:
    counts: dict[str, int]  # the study's trials per state, after this worker
    lost: list[int]  # trials another worker took over from this one (`sweeps.fencing`)
    untracked: list[int] = field(default_factory=list)  # trials that got no MLflow run


def _optimize(
    study: optuna.Study,
    cfg: SweepConfig,
    recorder: Recorder,
    n_trials: int,
    device_spec: str,
    progress: Progress,
    data_version: str,
    share: str | None = None,
) -> list[int]:
    """Runs the trials; returns those another worker took over (`sweeps.fencing`)."""
    device = resolve_device(device_spec)
    task = load_task(cfg.base)
    label = device_label(device)
    origin = Provenance(data_version, share)
    rounds = RoundOptimizer(study, cfg, task, device, label, recorder, progress, origin)
    rounds.optimize(n_trials)
    return rounds.lost


def _run_processes(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    plan: WorkerPlan,
    launcher: Launcher,
    stores: Stores,
    progress: Progress,
    outcome: RunOutcome,
) -> list[int]:
    """Start the plan's workers with `launcher` and follow them to the end (the caller
    closes it); their reports go to `outcome.workers`. While it waits, this process holds
    no database connection: each look at the progress connects for a moment.

    Returns the exit codes of those that did not exit 0."""
    known = {t.number for t in study.get_trials(deepcopy=False, states=FINISHED)}

    def poll() -> None:  # a read: rerun when the storage's server drops the connection
        try:
            retrying(lambda: _poll(study, known, progress), stores.storage)
        finally:
            close_storage(storage)  # between looks the launcher holds no connection

    close_storage(storage)
    release_idle()  # MLflow's connections too: none is held while the workers run
    launcher.start(plan)
    try:
        follow(launcher, poll)
    finally:
        outcome.workers = launcher.reports()
    codes = launcher.exit_codes()
    if failed := [code for code in codes if code != EXIT_LOST]:
        from sweeps.recording import warn

        warn(f"{len(failed)} worker process(es) exited with an error (codes {failed})")
        for report in outcome.workers:
            if report.exit_code not in (0, EXIT_LOST) and report.error:
                where = f" on {report.node}" if report.node else ""
                warn(f"worker {report.index}{where} (exit {report.exit_code}): {report.error}")
    return codes


def _poll(study: optuna.Study, known: set[int], progress: Progress) -> None:
    for trial in study.get_trials(deepcopy=False, states=FINISHED):
        if trial.number not in known:
            known.add(trial.number)
            progress.update(trial)


def count_states(
    study: optuna.Study, storage: optuna.storages.BaseStorage | None = None
) -> dict[str, int]:
    """Trials per state name: one query where the storage (`study`'s, built on `storage`)
    allows, else every trial read."""
    what = "counting a study's trials"
    counts = fenced(study, what, lambda e: _state_counts(e, study), storage)
    if counts is not None:
        return counts
    counts = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def _state_counts(engine: sa.Engine, study: optuna.Study) -> dict[str, int]:
    from sweeps._optuna.read import state_counts

    return state_counts(engine, study)

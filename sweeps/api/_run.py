"""`sweeps.run` and `sweeps.resume`: a study's trials, in this process or in workers."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from sweeps.api._base import (
    PathLike,
    library_call,
    stored_config,
    stores_for,
    study_task,
)
from sweeps.api._results import Rows, RunResult
from sweeps.errors import UsageError, mask_secrets
from sweeps.task_refs import TaskLike, TaskRef, require_importable, serving, task_ref

if TYPE_CHECKING:
    from sweeps.config import SweepConfig
    from sweeps.confirm_report import Confirmation
    from sweeps.launchers import Launcher
    from sweeps.runner import RunOutcome
    from sweeps.storage import Stores


def run(
    study: str,
    *,
    task: TaskLike | None = None,
    config: PathLike | Mapping[str, Any] | None = None,
    penalties: Sequence[str] | str | None = None,
    lambda_min: float | None = None,
    lambda_max: float | None = None,
    trials: int | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    optimizer: str | None = None,
    seed: int | None = None,
    sampler: str | None = None,
    pruner: str | None = None,
    workers: int | None = None,
    batch: int | None = None,
    device: str | None = None,
    track: bool = True,
    progress: bool = False,
    confirm: int | None = None,
    create_only: bool = False,
    accept_data_change: bool = False,
    home: PathLike | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    on_ready: Callable[[], None] | None = None,
    worker_output: Literal["log", "inherit"] = "log",
    launcher: Launcher | None = None,
    detach: bool = False,
    **options: Any,
) -> RunResult:
    """Run a study over λ × penalty type, or more trials of an existing one.

    Options left out take the values of `config` (a TOML file's path, or a mapping of the
    same keys), else the defaults of `sweeps run`. An existing study of this name is
    resumed when its search space is the same, and keeps the penalties it was created with
    unless `penalties` names others.

    Args:
        study: The study's name.
        task: A task name (`d2l-synthetic`, `diabetes`, `digits`, `csv`,
            `python:MODULE:FUNCTION`) or a callable `data_seed -> trainer.tasks.Task`.
            With `workers > 1` the workers import a callable by its module and name: one
            defined in `__main__` (a notebook), a lambda or a closure is refused.
        config: A sweep file (TOML) or a mapping of `sweeps run` options.
        penalties: The penalties searched (names, or one comma-separated string).
        lambda_min: Lower end of the log-uniform λ range.
        lambda_max: Upper end of the λ range.
        trials: Trials to add to the study.
        epochs: Epochs per trial.
        lr: The optimizer's learning rate.
        batch_size: Minibatch size (0: full batch).
        optimizer: `sgd`, `adam` or `adamw`.
        seed: The study's seed (data, initialization, shuffling and the sampler).
        sampler: `tpe`, `random`, `grid`, `cmaes` or `gp`.
        pruner: `median`, `hyperband` or `none`.
        workers: Local worker processes (`sweeps worker`) sharing the storage.
        batch: Trials trained together as one stacked model.
        device: `auto`, `cpu`, `cuda`, `cuda:N` or `mps`.
        track: Log every trial to MLflow (else the results table only).
        progress: Print a line per finished trial on stderr.
        confirm: When the study ends, confirm it on this many fresh seeds (`confirm`).
        create_only: Create the study for workers started elsewhere; run no trial.
        accept_data_change: Go on although a data file the study pinned changed.
        home: Project directory of the default stores (SWEEPS_HOME, `./sweeps-data`).
        storage: Optuna storage and results tables URL (SWEEPS_STORAGE, default
            `sqlite:///HOME/sweeps.db`); `postgresql://...` for many workers.
        tracking_uri: MLflow tracking URI (SWEEPS_TRACKING_URI, default
            `sqlite:///HOME/mlflow.db`), or an MLflow server's `http://host:port`.
        on_ready: Called once the stores are open and the study is loaded, before the
            first trial (the `sweeps` command settles its heap there).
        worker_output: Where local worker processes write: `log`, records of the logger
            `sweeps.workers` (stderr at WARNING, stdout at INFO); `inherit`, this
            process's standard output and error (as the `sweeps` command).
        launcher: What starts the `workers` (a `sweeps.launchers.Launcher`, such as
            `RayLauncher` or `SlurmLauncher`); default: local child processes.
        detach: With a launcher whose workers outlive the call (`SlurmLauncher`): start
            them and return at once; `RunResult.job` names them (a Slurm job id).
        **options: Any other option of `sweeps run` (`lr_min` and `lr_max` to search the
            learning rate, `per_penalty`, `repeats`, `timeout`, `devices`, `grid_points`,
            `report_every`, `history`, `penalize`) and the task's options (`csv`:
            `train_csv`, `target`, ...).

    Returns:
        What the call did, with each penalty's best trial.

    Raises:
        UsageError: An option is invalid, or the study exists with another search space.
        TaskNotImportable: `workers > 1` (or `create_only`) with a task workers cannot import.
        StorageError: A store cannot be reached, read or written.
    """
    ref = None if task is None else task_ref(task)
    given = dict(
        options,
        task=None if ref is None else ref.name,
        penalties=penalties,
        lambda_min=lambda_min,
        lambda_max=lambda_max,
        trials=trials,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        optimizer=optimizer,
        seed=seed,
        sampler=sampler,
        pruner=pruner,
        workers=workers,
        batch=batch,
        device=device,
    )
    with library_call(mlflow=track):
        stores = stores_for(home, storage, tracking_uri)
        stores.check_files(write=True, tracking=track)
        cfg, note = _sweep_config(study, config, given, stores)
        ref = ref or task_ref(cfg.base.task)
        how = _How(
            track,
            progress,
            confirm,
            create_only,
            accept_data_change,
            on_ready,
            worker_output,
            launcher,
            detach,
        )
        return _run(cfg, stores, ref, how, note)


def _sweep_config(
    study: str,
    config: PathLike | Mapping[str, Any] | None,
    given: Mapping[str, Any],
    stores: Stores,
) -> tuple[SweepConfig, str | None]:
    """The study's configuration from the file or mapping, what was given, and the stored
    penalties of an existing study; with the note on what the default penalties left out."""
    from sweeps.config import SweepConfig, left_out_note, load_toml
    from sweeps.lookup import stored_lr_range, stored_penalties

    base = config if isinstance(config, Mapping) else load_toml(os.fspath(config)) if config else {}
    values = {k.replace("-", "_"): v for k, v in base.items()}
    values.update({k.replace("-", "_"): v for k, v in given.items() if v is not None})
    values["study"] = study
    if values.get("devices") and given.get("device") is not None:
        raise UsageError("give either --device or --devices, not both")
    if "penalties" not in values:  # a resume keeps the study's; a new study the defaults
        resumed = stored_penalties(stores, study)
        if resumed is not None:
            values["penalties"] = resumed
    if not {"lr", "lr_min", "lr_max"} & values.keys():  # a resume keeps a searched lr
        lr_range = stored_lr_range(stores, study)
        if lr_range is not None:
            values["lr_min"], values["lr_max"] = lr_range
    cfg = SweepConfig.from_mapping(values)
    note = None if "penalties" in values else left_out_note(cfg.base.optimizer)
    return cfg, note


@dataclass(frozen=True)
class _How:
    """How a call runs its study (the arguments of `run` past the study's options)."""

    track: bool = True
    progress: bool = False
    confirm: int | None = None
    create_only: bool = False
    accept_data_change: bool = False
    on_ready: Callable[[], None] | None = None
    worker_output: Literal["log", "inherit"] = "log"
    launcher: Launcher | None = None
    detach: bool = False


def _run(cfg: SweepConfig, stores: Stores, ref: TaskRef, how: _How, note: str | None) -> RunResult:
    from sweeps.launchers import LocalLauncher
    from sweeps.runner import run_study
    from sweeps.task_refs import import_root

    if how.worker_output not in ("log", "inherit"):
        raise UsageError(f"worker_output must be 'log' or 'inherit', got {how.worker_output!r}")
    if how.create_only:
        require_importable(ref, "with create_only")
    elif how.launcher is not None:
        require_importable(ref, "with a launcher")
    elif cfg.workers > 1:
        require_importable(ref, f"with workers={cfg.workers}")
    confirming = None
    if how.confirm is not None and how.detach:
        raise UsageError("confirm waits for the study's end: after detach, `sweeps confirm`")
    if how.confirm is not None:  # refused before the study runs
        from sweeps.confirm_options import ConfirmOptions

        confirming = ConfirmOptions(seeds=how.confirm)
    launcher = how.launcher
    if launcher is None and cfg.workers > 1:
        launcher = LocalLauncher(how.worker_output, import_root(ref))
    with serving(ref):
        outcome = run_study(
            cfg,
            stores,
            track=how.track,
            quiet=not how.progress,
            create_only=how.create_only,
            accept_data_change=how.accept_data_change,
            on_ready=how.on_ready or (lambda: None),
            launcher=launcher,
            detach=how.detach,
        )
        confirmed = None
        if confirming is not None and not outcome.interrupted and outcome.counts.get("COMPLETE"):
            from sweeps.confirm_study import confirm_study

            confirmed = confirm_study(cfg.study, stores, confirming, track=how.track)
    return run_result(outcome, cfg, stores, how.track, note, confirmed)


def run_result(
    outcome: RunOutcome,
    cfg: SweepConfig,
    stores: Stores,
    track: bool,
    note: str | None,
    confirmed: Confirmation | None,
) -> RunResult:
    from tracking.records import BEST_COLUMNS, COUNT_COLUMNS

    return RunResult(
        study=outcome.study,
        requested=outcome.requested,
        penalties=[p.value for p in cfg.penalties],
        states=outcome.counts,
        best=Rows(outcome.best, (*BEST_COLUMNS, *COUNT_COLUMNS)),
        interrupted=outcome.interrupted,
        reused=outcome.reused,
        untracked=outcome.untracked,
        lost=outcome.lost,
        lost_workers=outcome.lost_workers,
        failed_workers=outcome.failed_workers,
        home=stores.home,
        storage=mask_secrets(stores.storage),
        tracking_uri=mask_secrets(stores.tracking_uri) if track else None,
        mlflow_experiment_id=outcome.mlflow_experiment_id,
        mlflow_parent_run_id=outcome.mlflow_parent_run_id,
        note=note,
        confirmation=confirmed,
        workers=outcome.workers,
        searches_lr=cfg.searches_lr,
        job=outcome.job,
    )


def resume(
    study: str,
    *,
    trials: int | None = None,
    task: TaskLike | None = None,
    workers: int | None = None,
    batch: int | None = None,
    device: str | None = None,
    timeout: float | None = None,
    track: bool = True,
    progress: bool = False,
    confirm: int | None = None,
    accept_data_change: bool = False,
    home: PathLike | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    worker_output: Literal["log", "inherit"] = "log",
    launcher: Launcher | None = None,
) -> RunResult:
    """Run more trials of an existing study, with the configuration it was created with.

    Args:
        study: The study's name.
        trials: Trials to add (default: as many as the study was created with).
        task: The task again, for a study whose task was given as a Python object that
            cannot be imported by name (one from a notebook): the same function.
        workers: Local worker processes (default: the study's).
        batch: Trials trained together as one stacked model (default: the study's).
        device: The device to train on (default: the study's).
        timeout: Stop starting trials after this many seconds.
        track: Log every trial to MLflow.
        progress: Print a line per finished trial on stderr.
        confirm: When the trials end, confirm the study on this many fresh seeds.
        accept_data_change: Go on although a data file the study pinned changed.
        home: As in `run`.
        storage: As in `run`.
        tracking_uri: As in `run`.
        worker_output: As in `run`.
        launcher: As in `run`.

    Returns:
        What the call did, with each penalty's best trial.

    Raises:
        UnknownStudyError: No study of that name in the storage.
        UsageError: An option is invalid, or `task` is not the study's task.
        TaskNotImportable: `workers > 1` with a task the workers cannot import.
        StorageError: A store cannot be reached, read or written.
    """
    with library_call(mlflow=track):
        stores = stores_for(home, storage, tracking_uri)
        stores.check_files(write=True, tracking=track)
        cfg = stored_config(stores, study)
        changes: dict[str, Any] = {
            "trials": trials,
            "workers": workers,
            "batch": batch,
            "timeout": timeout,
        }
        cfg = replace(cfg, **{k: v for k, v in changes.items() if v is not None})
        if device is not None:
            cfg = replace(cfg, base=cfg.base.replace(device=device), devices=())
        how = _How(
            track, progress, confirm, False, accept_data_change, None, worker_output, launcher
        )
        return _run(cfg, stores, study_task(cfg, task), how, None)

"""`sweeps.confirm` and `sweeps.check`: is a study's best real, are its stores whole?"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sweeps.api._base import PathLike, library_call, stored_config, stores_for, study_task
from sweeps.confirm_options import ConfirmOptions
from sweeps.task_refs import TaskLike, serving

if TYPE_CHECKING:
    from sweeps.check_study import CheckReport
    from sweeps.confirm_report import Confirmation

_DEFAULTS = ConfirmOptions()  # the defaults of `sweeps confirm`


def confirm(
    study: str,
    *,
    seeds: int = _DEFAULTS.seeds,
    top: int = _DEFAULTS.top,
    trials: Sequence[int] = (),
    fixed_data: bool = False,
    batch: int | None = None,
    device: str | None = None,
    task: TaskLike | None = None,
    track: bool = True,
    home: PathLike | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
) -> Confirmation:
    """Retrain each penalty's best trial (or the `trials` named) on fresh seeds and compare
    them paired: mean and 95% CI per candidate, differences against the best with CIs,
    wins, Wilcoxon p-values (Holm-adjusted), Friedman over three or more (docs/confirm.md).

    Args:
        study: The study's name.
        seeds: Fresh seeds per candidate (disjoint from the study's).
        top: Best trials per penalty.
        trials: Exactly these trials instead.
        fixed_data: Keep the study's data; the seeds vary initialization and order only.
        batch: At most this many runs per stack (default: all that fit).
        device: The device to train on (default: the study's).
        task: The task again, for a study whose task was given as an object that cannot
            be imported by name (as in `resume`).
        track: Log the runs to MLflow under the study's parent run.
        home: As in `run`.
        storage: As in `run`.
        tracking_uri: As in `run`.

    Returns:
        The confirmation: `verdict_lines()` in words, `rows()` / `as_frame()` per
        candidate, `as_json()` as `sweeps confirm --json`.

    Raises:
        UnknownStudyError: No study of that name.
        UsageError: Bad options, an unknown or unfinished trial, nothing complete.
    """
    from sweeps.confirm_study import confirm_study

    with library_call(mlflow=track):
        options = ConfirmOptions(seeds, top, tuple(trials), fixed_data, batch, device)
        if device is not None:
            from trainer import resolve_device

            resolve_device(device)  # refused before anything is written
        stores = stores_for(home, storage, tracking_uri)
        stores.check_files(write=True, tracking=track)
        ref = study_task(stored_config(stores, study), task)
        with serving(ref):
            return confirm_study(study, stores, options, track=track)


def check(
    study: str,
    *,
    repair: bool = False,
    track: bool = True,
    home: PathLike | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
) -> CheckReport:
    """Check that Optuna, the results table and MLflow hold every finished trial of the
    study once, in the same state; `repair` fixes what differs.

    Args:
        study: The study's name.
        repair: Fill missing rows and runs, close orphaned RUNNING runs.
        track: Check MLflow too (else Optuna against the results table only).
        home: As in `run`.
        storage: As in `run`.
        tracking_uri: As in `run`.

    Returns:
        The report: `consistent`, `problems`, `repaired`, the counts.

    Raises:
        UnknownStudyError: No study of that name.
        StorageError: A store cannot be reached or read.
    """
    from sweeps.check_study import check_study

    with library_call(mlflow=track):
        stores = stores_for(home, storage, tracking_uri)
        stores.check_files(write=repair, tracking=track)
        return check_study(study, stores, repair=repair, track=track)

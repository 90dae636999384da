"""What every call of the public API shares: where its stores are, how it is quiet and
how its errors are raised, the configuration and task of an existing study."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sweeps.errors import UsageError, public_error
from sweeps.task_refs import TaskLike, TaskRef, task_ref

if TYPE_CHECKING:
    from sweeps.config import SweepConfig
    from sweeps.storage import Stores

PathLike = str | os.PathLike[str]
DEFAULT_HOME = "./sweeps-data"


def store_args(
    home: PathLike | None, storage: str | None, tracking_uri: str | None
) -> tuple[str, str | None, str | None]:
    """Where a call's studies live: the arguments, else SWEEPS_HOME, SWEEPS_STORAGE and
    SWEEPS_TRACKING_URI, else the defaults under HOME (as the `sweeps` command)."""
    home = home if home is not None else os.environ.get("SWEEPS_HOME") or DEFAULT_HOME
    return (
        os.fspath(home),
        storage or os.environ.get("SWEEPS_STORAGE") or None,
        tracking_uri or os.environ.get("SWEEPS_TRACKING_URI") or None,
    )


def stores_for(home: PathLike | None, storage: str | None, tracking_uri: str | None) -> Stores:
    """`store_args` resolved and checked (`sweeps.storage.resolve_stores`)."""
    from sweeps.storage import resolve_stores

    return resolve_stores(*store_args(home, storage, tracking_uri))


@contextmanager
def library_call(*, optuna: bool = True, mlflow: bool = False) -> Iterator[None]:
    """A public call: quiet (`sweeps.quiet`), its errors as `SweepsError`s."""
    from sweeps.quiet import quiet_libraries

    try:
        with quiet_libraries(optuna=optuna, mlflow=mlflow):
            yield
    except Exception as e:
        public = public_error(e)
        if public is e:
            raise
        raise public from None


def stored_config(stores: Stores, study: str) -> SweepConfig:
    """The configuration study `study` was created with (UnknownStudyError: none here)."""
    from sweeps.lookup import open_results, require_storage
    from sweeps.study import config_from_stored

    require_storage(stores, study)
    results = open_results(stores)
    try:
        return config_from_stored(results.get_study(study).config)
    finally:
        results.dispose()


def study_task(cfg: SweepConfig, task: TaskLike | None) -> TaskRef:
    """The study's task, given again as `task` or by its stored name."""
    if task is None:
        return task_ref(cfg.base.task)
    ref = task_ref(task)
    if ref.name != cfg.base.task:
        raise UsageError(
            f"task {ref.name!r} is not the study's task {cfg.base.task!r}; pass that one"
        )
    return ref

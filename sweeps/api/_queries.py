"""The read-only calls: studies, trials, best, compare (over `sweeps.lookup`). They read
the storage only (never MLflow) and import neither torch nor MLflow."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sweeps.api._base import PathLike, library_call, stores_for
from sweeps.api._results import Rows
from tracking.records import BEST_COLUMNS, COUNT_COLUMNS, TRIAL_COLUMNS

if TYPE_CHECKING:
    from sweeps.storage import Stores

STUDY_COLUMNS = ("study", "task", "trials", "complete", "pruned", "failed", "best_value")
STANDING_COLUMNS = (*BEST_COLUMNS, *COUNT_COLUMNS)


def _read_stores(home: PathLike | None, storage: str | None) -> Stores:
    """The stores of a lookup, which reads the storage only."""
    stores = stores_for(home, storage, None)
    stores.check_files(write=False, tracking=False)
    return stores


def studies(*, home: PathLike | None = None, storage: str | None = None) -> Rows:
    """The studies in the storage, one row each.

    Args:
        home: As in `run`.
        storage: As in `run`.

    Returns:
        Rows with `study`, `task`, `trials`, `complete`, `pruned`, `failed`, `best_value`,
        `created`, ... (`sweeps studies --json`).

    Raises:
        StorageError: No storage there, or it cannot be read.
    """
    from sweeps.lookup import list_studies

    with library_call(optuna=False):
        return Rows(list_studies(_read_stores(home, storage)), STUDY_COLUMNS)


def trials(study: str, *, home: PathLike | None = None, storage: str | None = None) -> Rows:
    """Every trial of the study, by number: its state, penalty, λ, losses, duration,
    device and MLflow run (the columns of `sweeps trials --json` and `sweeps export`).

    Args:
        study: The study's name.
        home: As in `run`.
        storage: As in `run`.

    Returns:
        One row per trial; `as_frame()` gives a DataFrame.

    Raises:
        UnknownStudyError: No study of that name.
        StorageError: No storage there, or it cannot be read.
    """
    from sweeps.lookup import list_trials

    with library_call():
        return Rows(list_trials(_read_stores(home, storage), study), TRIAL_COLUMNS)


def best(
    study: str,
    *,
    penalty: str | None = None,
    home: PathLike | None = None,
    storage: str | None = None,
) -> Rows:
    """Each penalty's best trial, best first, with its trials counted by how they ended
    (the rows of `sweeps best --json`).

    A penalty with no complete trial has a row whose best fields are None. Where the
    study was confirmed, the rows hold the confirmed test loss too (`confirmed_mean`,
    `confirmed_ci_low`, `confirmed_ci_high`, `confirmed_seeds`).

    Args:
        study: The study's name.
        penalty: Only this penalty.
        home: As in `run`.
        storage: As in `run`.

    Returns:
        One row per penalty; `as_frame()` gives a DataFrame.

    Raises:
        UnknownStudyError: No study of that name.
        StorageError: No storage there, or it cannot be read.
    """
    from sweeps import lookup

    with library_call(optuna=False):
        return Rows(lookup.best(_read_stores(home, storage), study, penalty), STANDING_COLUMNS)


def compare(*studies: str, home: PathLike | None = None, storage: str | None = None) -> Rows:
    """`best` of every study named (of every study in the storage when none is), study
    by study: the best λ and losses per study × penalty.

    Args:
        *studies: The studies' names.
        home: As in `run`.
        storage: As in `run`.

    Returns:
        One row per study and penalty; `as_frame()` gives a DataFrame.

    Raises:
        UnknownStudyError: A study named is not in the storage.
        StorageError: No storage there, or it cannot be read.
    """
    from sweeps import lookup

    with library_call(optuna=False):
        return Rows(lookup.compare(_read_stores(home, storage), studies), STANDING_COLUMNS)

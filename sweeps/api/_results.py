"""What the public API returns: plain rows (dicts under the names used everywhere), small
result types, and pandas DataFrames on request (pandas is imported only then)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from sweeps.confirm_report import Confirmation
    from sweeps.launchers import WorkerReport

Row = dict[str, Any]


class Rows(list[Row]):
    """A list of rows (dicts keyed by the names used everywhere: `penalty`, `lambda`,
    `val_loss`, ...), as JSON would hold them, with `as_frame()` for pandas."""

    def __init__(self, rows: Sequence[Row] = (), columns: Sequence[str] = ()) -> None:
        super().__init__(rows)
        self.columns = tuple(columns)  # the leading columns of `as_frame`, in order

    def as_frame(self) -> pd.DataFrame:
        """The rows as a pandas DataFrame (pandas is imported only here)."""
        return to_frame(self, self.columns)


def to_frame(rows: Sequence[Row], columns: Sequence[str] = ()) -> pd.DataFrame:
    """`rows` as a DataFrame: one row each, `columns` first in that order, then any other
    key the rows have (an empty list gives the columns and no rows)."""
    import pandas as pd

    names = list(dict.fromkeys([*columns, *(key for row in rows for key in row)]))
    return pd.DataFrame([{name: row.get(name) for name in names} for row in rows], columns=names)


@dataclass(frozen=True)
class RunResult:
    """What `sweeps.run` and `sweeps.resume` did.

    Attributes:
        study: The study's name.
        requested: How many trials the call was asked to run.
        penalties: The penalties the study searches.
        states: The study's trials per state (`COMPLETE`, `PRUNED`, `FAIL`, ...) after the call.
        best: Each penalty's best trial, best first (the rows of `sweeps.best`);
            `best.as_frame()` gives them as a DataFrame.
        interrupted: Ctrl-C (KeyboardInterrupt) stopped the call; finished trials are kept.
        reused: Trials that repeated a finished configuration and took its result.
        untracked: Trials whose MLflow run could not be written (`sweeps.check(repair=True)`
            adds them); they are in Optuna and the results table.
        lost: Trials another worker took over from this process (their result here was
            discarded, theirs kept).
        lost_workers: Worker processes that lost trials so.
        failed_workers: Worker processes that exited with an error.
        home: The project directory of the default stores.
        storage: The Optuna storage and results tables (password masked).
        tracking_uri: The MLflow store (password masked); None when not tracked.
        mlflow_experiment_id: The study's MLflow experiment; None when not tracked.
        mlflow_parent_run_id: The study's parent run; None when not tracked.
        note: What the default set of penalties left out and why, when it left one out.
        confirmation: The confirmation asked for with `confirm=`, else None.
        workers: How each worker process ended (and where, where an engine placed it).
        searches_lr: Whether the study searches the learning rate (`lr_min`, `lr_max`).
        job: What names the workers a detached call left running (a Slurm job id).
    """

    study: str
    requested: int
    penalties: list[str]
    states: dict[str, int]
    best: Rows
    interrupted: bool = False
    reused: int = 0
    untracked: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    lost_workers: int = 0
    failed_workers: int = 0
    home: Path | None = None
    storage: str = ""
    tracking_uri: str | None = None
    mlflow_experiment_id: str | None = None
    mlflow_parent_run_id: str | None = None
    note: str | None = None
    confirmation: Confirmation | None = None
    workers: list[WorkerReport] = field(default_factory=list)
    searches_lr: bool = False
    job: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The `sweeps run --json` document."""
        return {
            "confirmation": None if self.confirmation is None else self.confirmation.as_json(),
            "study": self.study,
            "requested": self.requested,
            "penalties": self.penalties,
            "states": self.states,
            "interrupted": self.interrupted,
            "best": self.best,
            "reused": self.reused,
            "storage": self.storage,
            "tracking_uri": self.tracking_uri,
            "mlflow_experiment_id": self.mlflow_experiment_id,
            "mlflow_parent_run_id": self.mlflow_parent_run_id,
            "untracked": self.untracked,
            "workers": [report.as_json() for report in self.workers],
            "job": self.job,
        }


@dataclass(frozen=True)
class TrainResult:
    """One configuration trained by `sweeps.train`.

    Attributes:
        summary: The configuration and its final metrics under the names used everywhere
            (`penalty`, `lambda`, `train_loss`, `val_loss`, `test_loss`, `w_norm`, ...,
            `status`, `duration_s`, `mlflow_run_id`): the `sweeps train --json` document.
        history: Each metric's value per epoch.
        state_dict: The trained model's weights.
    """

    summary: Row
    history: dict[str, list[float]] = field(repr=False)
    state_dict: dict[str, Any] = field(repr=False)

    @property
    def diverged(self) -> bool:
        """Whether a loss or ‖w‖ became non-finite (training stopped at that epoch)."""
        return bool(self.summary["status"] == "diverged")

    def history_frame(self) -> pd.DataFrame:
        """`history` as a DataFrame, one row per epoch (`epoch` from 1)."""
        epochs = max((len(values) for values in self.history.values()), default=0)
        rows = [
            {"epoch": i + 1, **{m: v[i] if i < len(v) else None for m, v in self.history.items()}}
            for i in range(epochs)
        ]
        return to_frame(rows, ("epoch", *self.history))

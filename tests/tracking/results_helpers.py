"""Records and a filled study shared by the results-store tests (no tests here)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tracking.records import StudyRecord, TrialRecord, TrialState
from tracking.results import ResultsStore


def study(name: str = "demo", **kwargs: Any) -> StudyRecord:
    return StudyRecord(name=name, task="d2l-synthetic", config={"trials": 20}, **kwargs)


def trial(
    study_name: str,
    number: int,
    penalty: str = "l2",
    lambda_: float = 3.0,
    value: float | None = 0.5,
    state: TrialState = TrialState.COMPLETE,
    **kwargs: Any,
) -> TrialRecord:
    params = {"penalty": penalty, "lambda": lambda_, "lr": 0.003, "epochs": 100, "seed": 7}
    if penalty == "elastic_net":
        params["l1_ratio"] = 0.25
    final = {
        "train_loss": value,
        "val_loss": value,
        "test_loss": None if value is None else value * 2,
        "w_norm": 0.125,
        "penalty_value": 0.0625,
    }
    return TrialRecord(
        study=study_name,
        number=number,
        state=state,
        params=params,
        final=final,
        value=value,
        duration_s=1.25,
        device="cpu",
        start_time_ms=0,
        end_time_ms=1250,
        mlflow_run_id=f"run-{number}",
        **kwargs,
    )


def count_rows(store: ResultsStore, name: str) -> int:
    query = sa.text(
        "SELECT COUNT(*) FROM sweeps_trials t JOIN sweeps_studies s ON s.id = t.study_id "
        "WHERE s.name = :name"
    )
    with store.engine.connect() as conn:
        return int(conn.execute(query, {"name": name}).scalar_one())


def fill_sweep(store: ResultsStore, name: str, offset: float = 0.0) -> None:
    """A study whose best rows are known by hand (see test_best_*)."""
    store.register_study(study(name))
    rows = [
        (0, "l2", 3.0, 0.9, TrialState.COMPLETE),
        (1, "l2", 1.0, 0.4, TrialState.COMPLETE),
        (2, "l2", 0.5, 0.01, TrialState.PRUNED),  # lower, but pruned
        (3, "l2", 2.0, 0.4, TrialState.COMPLETE),  # ties with 1: the lower number wins
        (4, "l1", 0.1, 0.7, TrialState.COMPLETE),
        (5, "l1", 0.2, 0.6, TrialState.COMPLETE),
        (6, "l1", 0.3, 0.0, TrialState.FAIL),
        (7, "none", 0.0, 1.5, TrialState.COMPLETE),
        (8, "elastic_net", 0.01, 0.3, TrialState.COMPLETE),
        (9, "elastic_net", 0.02, 0.2, TrialState.RUNNING),
    ]
    for number, penalty, lam, value, state in rows:
        store.record_trial(trial(name, number, penalty, lam, value + offset, state))

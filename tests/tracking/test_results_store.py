"""ResultsStore behaviour through its public API, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.tracking.results_helpers import count_rows, fill_sweep, study, trial
from tracking.errors import TrackingError, UnknownStudyError
from tracking.records import StudyRecord, TrialState
from tracking.results import ResultsStore, make_engine, upgrade

TRIAL_KEYS = [
    "number",
    "state",
    "penalty",
    "lambda",
    "l1_ratio",
    "lr",
    "value",
    "train_loss",
    "val_loss",
    "test_loss",
    "w_norm",
    "penalty_value",
    "train_accuracy",
    "val_accuracy",
    "test_accuracy",
    "duration_s",
    "device",
    "epochs",
    "seed",
    "mlflow_run_id",
    "error",
    "reused_from",
]


@pytest.fixture
def store(storage_url: str) -> Iterator[ResultsStore]:
    results = ResultsStore(storage_url)
    results.ensure_schema()
    yield results
    results.dispose()


def test_register_study_first_writer_wins(storage_url: str, store: ResultsStore) -> None:
    first = store.register_study(study(mlflow_experiment_id="1", mlflow_parent_run_id="p-1"))
    other = ResultsStore(storage_url)
    late = StudyRecord("demo", "other-task", {"trials": 99}, "2", "p-2")
    try:
        stored = other.register_study(late)
        assert stored == first == study(mlflow_experiment_id="1", mlflow_parent_run_id="p-1")
        assert other.get_study("demo").mlflow_parent_run_id == "p-1"
    finally:
        other.dispose()


def test_attach_parent_lets_one_of_racing_processes_create_the_parent(
    storage_url: str, store: ResultsStore
) -> None:
    """While one process creates the parent run, another one starting at the same time
    waits, then takes that parent run instead of creating its own."""
    store.register_study(study())
    other = ResultsStore(storage_url)
    theirs: list[str] = []
    racing: list[threading.Thread] = []

    def create() -> str:
        attach = partial(other.attach_parent, "demo", "17", None, lambda: "parent-b")
        racing.append(threading.Thread(target=lambda: theirs.append(attach())))
        racing[0].start()
        racing[0].join(timeout=1.0)
        assert racing[0].is_alive()  # held back while this parent is being made
        return "parent-a"

    try:
        assert store.attach_parent("demo", "17", None, create) == "parent-a"
        racing[0].join(timeout=60)
        assert theirs == ["parent-a"]
        attached = study(mlflow_experiment_id="17", mlflow_parent_run_id="parent-a")
        assert other.get_study("demo") == attached
        # A stored parent found missing from the tracking store is replaced by one caller.
        assert other.attach_parent("demo", "18", "parent-a", lambda: "parent-c") == "parent-c"
        assert store.attach_parent("demo", "18", "parent-a", lambda: "parent-d") == "parent-c"
    finally:
        other.dispose()
    with pytest.raises(UnknownStudyError, match="no study named 'nope'"):
        store.attach_parent("nope", "1", None, lambda: "parent-e")


def test_set_study_mlflow_replaces_what_is_stored(storage_url: str, store: ResultsStore) -> None:
    store.register_study(study())
    other = ResultsStore(storage_url)
    try:
        assert store.attach_parent("demo", "17", None, lambda: "parent-a") == "parent-a"
        other.set_study_mlflow("demo", "19", "parent-c")
        attached = study(mlflow_experiment_id="19", mlflow_parent_run_id="parent-c")
        assert store.get_study("demo") == attached
    finally:
        other.dispose()
    with pytest.raises(UnknownStudyError, match="no study named 'nope'"):
        store.set_study_mlflow("nope", "1", "2")


def test_record_trial_once_then_replace(store: ResultsStore) -> None:
    store.register_study(study())
    assert store.record_trial(trial("demo", 3, value=0.5)) is True
    assert store.record_trial(trial("demo", 3, value=9.0)) is False
    assert count_rows(store, "demo") == 1
    assert store.trials("demo")[0]["value"] == 0.5

    fixed = trial("demo", 3, value=None, state=TrialState.FAIL, error="RuntimeError: nan loss")
    assert store.record_trial(fixed, replace=True) is True
    assert count_rows(store, "demo") == 1
    row = store.trials("demo")[0]
    assert (row["state"], row["value"], row["error"]) == ("FAIL", None, "RuntimeError: nan loss")


def test_record_trials_writes_a_round_in_one_go_each_row_once(store: ResultsStore) -> None:
    store.register_study(study())
    assert store.record_trial(trial("demo", 1, value=0.5)) is True
    written = store.record_trials([trial("demo", n, value=float(n)) for n in (0, 1, 2)])
    assert written == [True, False, True]  # trial 1's row was there: kept, not replaced
    assert [(r["number"], r["value"]) for r in store.trials("demo")] == [
        (0, 0.0),
        (1, 0.5),
        (2, 2.0),
    ]
    assert store.record_trials([]) == []
    with pytest.raises(UnknownStudyError):
        store.record_trials([trial("ghost", 0)])
    assert count_rows(store, "demo") == 3


def test_a_round_writes_the_rows_one_trial_at_a_time_writes(store: ResultsStore) -> None:
    """`record_trials` writes below the ORM, column by column: every column of its rows
    equals what `record_trial` (through the ORM) writes for the same record."""
    store.register_study(study())
    store.register_study(study("other"))
    final = {
        "train_loss": 1e-300,
        "val_loss": math.inf,
        "test_loss": 2.5,
        "w_norm": 0.1,
        "penalty_value": 0.0,
        "train_accuracy": 0.5,
        "val_accuracy": 0.25,
        "test_accuracy": 1.0,
    }
    first = trial("demo", 0, "elastic_net", 1e-5, 0.125, error="RuntimeError", reused_from=3)
    recs = [
        replace(first, final=final),
        replace(trial("demo", 1, value=None, state=TrialState.PRUNED), device="cuda:1"),
    ]
    for rec in recs:
        store.record_trial(replace(rec, study="other"))
    assert store.record_trials(recs) == [True, True]

    def rows(name: str) -> list[dict[str, object]]:
        return [{k: v for k, v in row.items() if k != "study"} for row in store.trials(name)]

    assert rows("demo") == rows("other")
    assert rows("demo")[0]["val_loss"] == math.inf and rows("demo")[0]["reused_from"] == 3


def test_record_trial_needs_a_registered_study(store: ResultsStore) -> None:
    with pytest.raises(UnknownStudyError, match="no study named 'ghost'"):
        store.record_trial(trial("ghost", 0))
    with pytest.raises(UnknownStudyError):
        store.get_study("ghost")
    with pytest.raises(UnknownStudyError):
        store.trials("ghost")
    with pytest.raises(UnknownStudyError):
        store.best("ghost")
    with pytest.raises(UnknownStudyError):
        store.trial_numbers("ghost")


def test_trials_rows_keep_full_precision(store: ResultsStore) -> None:
    store.register_study(study())
    tricky = [0.1 + 0.2, 1 / 3, 1e-300, math.pi * 1e12, 10**-4.5]
    for number, x in enumerate(tricky):
        store.record_trial(trial("demo", number, penalty="elastic_net", lambda_=x, value=x))
    store.record_trial(trial("demo", 9, value=None, state=TrialState.FAIL, error="boom"))

    rows = store.trials("demo")
    assert [list(row) for row in rows] == [TRIAL_KEYS] * 6
    assert [row["number"] for row in rows] == [0, 1, 2, 3, 4, 9]
    assert [row["lambda"] for row in rows[:5]] == tricky
    assert [row["value"] for row in rows[:5]] == tricky
    assert rows[0] == {
        "number": 0,
        "state": "COMPLETE",
        "penalty": "elastic_net",
        "lambda": tricky[0],
        "l1_ratio": 0.25,
        "lr": 0.003,
        "value": tricky[0],
        "train_loss": tricky[0],
        "val_loss": tricky[0],
        "test_loss": tricky[0] * 2,
        "w_norm": 0.125,
        "penalty_value": 0.0625,
        "train_accuracy": None,  # a regression task
        "val_accuracy": None,
        "test_accuracy": None,
        "duration_s": 1.25,
        "device": "cpu",
        "epochs": 100,
        "seed": 7,
        "mlflow_run_id": "run-0",
        "error": None,
        "reused_from": None,
    }
    assert (rows[5]["state"], rows[5]["value"], rows[5]["error"]) == ("FAIL", None, "boom")
    assert store.trial_numbers("demo") == {
        0: "COMPLETE",
        1: "COMPLETE",
        2: "COMPLETE",
        3: "COMPLETE",
        4: "COMPLETE",
        9: "FAIL",
    }


def test_classification_accuracy_is_stored_and_shown_by_best(store: ResultsStore) -> None:
    store.register_study(study())
    accuracy = {"train_accuracy": 1.0, "val_accuracy": 0.96875, "test_accuracy": 0.9375}
    rec = trial("demo", 0, value=0.125)
    store.record_trial(replace(rec, final=rec.final | accuracy))
    store.record_trial(trial("demo", 1, penalty="l1", value=0.25))

    by_number = {row["number"]: row for row in store.trials("demo")}
    assert {k: by_number[0][k] for k in accuracy} == accuracy
    assert {k: by_number[1][k] for k in accuracy} == dict.fromkeys(accuracy)
    [best_l2] = store.best("demo", "l2")
    assert (best_l2["val_accuracy"], best_l2["test_accuracy"]) == (0.96875, 0.9375)


def test_studies_summary(store: ResultsStore) -> None:
    fill_sweep(store, "b-sweep")
    store.register_study(study("a-sweep", mlflow_experiment_id="42"))
    store.register_study(study("Zeta"))
    summaries = store.studies()
    assert [s["study"] for s in summaries] == ["Zeta", "a-sweep", "b-sweep"]
    b = summaries[2]
    created = datetime.fromisoformat(b.pop("created"))
    assert created.tzinfo is not None and abs(datetime.now(UTC) - created).total_seconds() < 300
    assert b == {
        "study": "b-sweep",
        "task": "d2l-synthetic",
        "trials": 10,
        "complete": 7,
        "pruned": 1,
        "failed": 1,
        "best_value": 0.3,
        "mlflow_experiment_id": None,
    }
    a = summaries[1]
    assert (a["trials"], a["complete"], a["best_value"], a["mlflow_experiment_id"]) == (
        0,
        0,
        None,
        "42",
    )


ODD_NAMES = [
    'it\'s "quoted"',
    "  spaces  in  name ",
    "../../etc/passwd",
    "λ-sweep ünïcødé 🚀",
    "x'; DROP TABLE sweeps_trials; --",
    "100%_like\\",
]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_study_names(store: ResultsStore, name: str) -> None:
    store.register_study(study("bystander"))
    assert store.register_study(study(name)).name == name
    assert store.record_trial(trial(name, 0, value=0.25)) is True
    assert store.get_study(name).name == name
    assert [r["number"] for r in store.trials(name)] == [0]
    assert store.best(name)[0]["study"] == name
    assert {s["study"] for s in store.studies()} == {name, "bystander"}
    assert store.trials("bystander") == []


def test_queries_on_a_database_without_tables(storage_url: str) -> None:
    fresh = ResultsStore(storage_url)
    try:
        assert fresh.studies() == []
        assert fresh.compare() == []
        with pytest.raises(UnknownStudyError):
            fresh.get_study("demo")
        with pytest.raises(UnknownStudyError):
            fresh.best("demo")
        assert not sa.inspect(fresh.engine).has_table("sweeps_studies")  # queries create nothing
    finally:
        fresh.dispose()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg//sweeper:s3cret@db.example/sweeps",
        "postgresql+psycopg://sweeper:s3cret@db.example:notaport/sweeps",
        "nosuchdb://sweeper:s3cret@db.example/sweeps",
        "not a url at all",
        "",
    ],
)
def test_malformed_url(url: str) -> None:
    with pytest.raises(TrackingError) as caught:
        ResultsStore(url)
    message = str(caught.value)
    assert "s3cret" not in message and "\n" not in message
    if "s3cret" in url:
        assert "sweeper:***@db.example" in message
    with pytest.raises(TrackingError):
        make_engine(url)


def test_unreachable_database_is_one_masked_line(tmp_path: Path) -> None:
    for url in (
        "postgresql+psycopg://sweeper:s3cret@127.0.0.1:1/sweeps",
        f"sqlite:///{tmp_path}/missing-dir/sweeps.db",
    ):
        broken = ResultsStore(url)
        with pytest.raises(TrackingError) as caught:
            broken.ensure_schema()
        assert "s3cret" not in str(caught.value) and "\n" not in str(caught.value)
        assert str(caught.value).startswith("results store '")
        with pytest.raises(TrackingError, match=r"^results store '"):
            upgrade(url)

"""The results tables as users query them: best() against hand-written and README SQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tests.tracking.results_helpers import fill_sweep
from tracking.errors import UnknownStudyError
from tracking.results import ResultsStore

BEST_KEYS = [
    "study",
    "penalty",
    "lambda",
    "l1_ratio",
    "lr",
    "value",
    "train_loss",
    "val_loss",
    "test_loss",
    "w_norm",
    "val_accuracy",
    "test_accuracy",
    "trial_number",
    "mlflow_run_id",
]


@pytest.fixture
def store(storage_url: str) -> Iterator[ResultsStore]:
    results = ResultsStore(storage_url)
    results.ensure_schema()
    yield results
    results.dispose()


# Best complete trial per penalty, written independently of the store's window function.
PLAIN_BEST_SQL = """
SELECT t.penalty, t.number, t.value, t.lambda
FROM sweeps_trials t JOIN sweeps_studies s ON s.id = t.study_id
WHERE s.name = :study AND t.state = 'COMPLETE' AND t.value IS NOT NULL
  AND NOT EXISTS (
    SELECT 1 FROM sweeps_trials o
    WHERE o.study_id = t.study_id AND o.penalty = t.penalty AND o.state = 'COMPLETE'
      AND o.value IS NOT NULL
      AND (o.value < t.value OR (o.value = t.value AND o.number < t.number)))
ORDER BY t.value, t.penalty
"""


def test_best_per_penalty_by_hand_and_by_plain_sql(store: ResultsStore) -> None:
    fill_sweep(store, "demo")
    fill_sweep(store, "better", offset=-0.3)  # another study must not leak into "demo"

    best = store.best("demo")
    assert [list(row) for row in best] == [BEST_KEYS] * 4
    picked = [(r["penalty"], r["trial_number"], r["lambda"], r["value"]) for r in best]
    assert picked == [
        ("elastic_net", 8, 0.01, 0.3),
        ("l2", 1, 1.0, 0.4),
        ("l1", 5, 0.2, 0.6),
        ("none", 7, 0.0, 1.5),
    ]
    with store.engine.connect() as conn:
        plain = conn.execute(sa.text(PLAIN_BEST_SQL), {"study": "demo"}).all()
    assert [(p, n, v, lam) for p, n, v, lam in plain] == [
        (r["penalty"], r["trial_number"], r["value"], r["lambda"]) for r in best
    ]
    assert best[0]["l1_ratio"] == 0.25 and best[0]["mlflow_run_id"] == "run-8"
    assert best[1]["test_loss"] == 0.8 and best[1]["study"] == "demo"


def test_best_for_one_penalty(store: ResultsStore) -> None:
    fill_sweep(store, "demo")
    assert [r["trial_number"] for r in store.best("demo", penalty="l1")] == [5]
    assert store.best("demo", penalty="weight_decay") == []
    assert store.best("demo", penalty="l2_unsquared") == []


def test_compare_studies(store: ResultsStore) -> None:
    fill_sweep(store, "one")
    fill_sweep(store, "two", offset=1.0)
    everything = store.compare()
    assert [(r["study"], r["penalty"]) for r in everything] == [
        ("one", "elastic_net"),
        ("one", "l2"),
        ("one", "l1"),
        ("one", "none"),
        ("two", "elastic_net"),
        ("two", "l2"),
        ("two", "l1"),
        ("two", "none"),
    ]
    assert everything[:4] == store.best("one") and everything[4:] == store.best("two")
    picked = store.compare(["two", "one", "two"])
    assert [r["study"] for r in picked] == ["two"] * 4 + ["one"] * 4
    assert store.compare([]) == []
    with pytest.raises(UnknownStudyError, match="no study named 'three'"):
        store.compare(["one", "three"])


# The README's "best λ per penalty" queries, verbatim apart from the bound study name.
README_SQLITE = """
SELECT t.penalty, t.lambda, t.l1_ratio, MIN(t.value) AS value, t.test_loss, t.w_norm,
       t.number AS trial_number
FROM sweeps_trials AS t JOIN sweeps_studies AS s ON s.id = t.study_id
WHERE s.name = 'my-study' AND t.state = 'COMPLETE'
GROUP BY t.penalty
ORDER BY value;
"""
README_POSTGRES = """
SELECT DISTINCT ON (t.penalty)
       t.penalty, t.lambda, t.l1_ratio, t.value, t.test_loss, t.w_norm, t.number AS trial_number
FROM sweeps_trials AS t JOIN sweeps_studies AS s ON s.id = t.study_id
WHERE s.name = 'my-study' AND t.state = 'COMPLETE' AND t.value IS NOT NULL
ORDER BY t.penalty, t.value, t.number;
"""
README_PORTABLE = """
SELECT penalty, lambda, l1_ratio, value, test_loss, w_norm, trial_number
FROM (
  SELECT t.penalty, t.lambda, t.l1_ratio, t.value, t.test_loss, t.w_norm,
         t.number AS trial_number,
         ROW_NUMBER() OVER (PARTITION BY t.penalty ORDER BY t.value, t.number) AS pos
  FROM sweeps_trials AS t JOIN sweeps_studies AS s ON s.id = t.study_id
  WHERE s.name = 'my-study' AND t.state = 'COMPLETE' AND t.value IS NOT NULL
) AS ranked
WHERE pos = 1
ORDER BY value;
"""


def test_readme_queries_agree_with_best(store: ResultsStore) -> None:
    fill_sweep(store, "my-study")
    fill_sweep(store, "other", offset=-1.0)
    best = [
        (r["penalty"], r["value"], r["lambda"], r["trial_number"]) for r in store.best("my-study")
    ]
    dialect_query = README_SQLITE if store.engine.dialect.name == "sqlite" else README_POSTGRES
    for query in (README_PORTABLE, dialect_query):
        with store.engine.connect() as conn:
            bound = sa.text(query.replace("'my-study'", ":study"))
            rows = conn.execute(bound, {"study": "my-study"}).mappings().all()
        got = [(r["penalty"], r["value"], r["lambda"], r["trial_number"]) for r in rows]
        if query is README_SQLITE:  # there a tie picks any of the tied rows, in any order
            assert sorted(g[:2] for g in got) == sorted(b[:2] for b in best)
        else:
            assert sorted(got) == sorted(best)

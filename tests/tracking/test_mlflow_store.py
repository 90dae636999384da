"""New SQLite MLflow stores are copies of an empty template (tracking.mlflow_store)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from mlflow.store.db.utils import _get_latest_schema_revision
from mlflow.tracking import MlflowClient

from tracking.mlflow_runs import MlflowTracker
from tracking.mlflow_store import seed_sqlite_store, template_path


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of this test's own, so the first seeding builds the template."""
    path = tmp_path / "cache"
    monkeypatch.setenv("SWEEPS_CACHE", str(path))
    return path


@pytest.mark.slow
def test_first_store_builds_the_template_and_both_are_mlflow_stores(
    cache: Path, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    db = tmp_path / "a" / "mlflow.db"
    assert seed_sqlite_store(f"sqlite:///{db}")
    template = template_path()
    assert template.parent == cache
    head = _get_latest_schema_revision()
    for store in (template, db):
        assert rows(store, "SELECT version_num FROM alembic_version") == [(head,)]
        assert rows(store, "SELECT * FROM experiments") == []  # MLflow adds Default on open

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    default = client.get_experiment("0")
    assert default.name == "Default"
    # The default experiment is this store's own, not the template's location.
    assert "cache" not in default.artifact_location
    client.create_experiment("only-here")
    assert rows(template, "SELECT * FROM experiments") == []


@pytest.mark.slow
def test_later_stores_are_independent_copies(cache: Path, tmp_path: Path) -> None:
    stores = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        db = tmp_path / name / "mlflow.db"
        assert seed_sqlite_store(f"sqlite:///{db}")
        stores.append(db)
    MlflowClient(tracking_uri=f"sqlite:///{stores[0]}").create_experiment("in-one")
    names = [
        e.name for e in MlflowClient(tracking_uri=f"sqlite:///{stores[1]}").search_experiments()
    ]
    assert names == ["Default"]


def test_an_existing_store_or_another_backend_is_left_alone(cache: Path, tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"not ours")
    assert not seed_sqlite_store(f"sqlite:///{db}")
    assert db.read_bytes() == b"not ours"
    assert not seed_sqlite_store("http://127.0.0.1:5000")
    assert not seed_sqlite_store("postgresql+psycopg://u@127.0.0.1/mlflow")
    assert not seed_sqlite_store(f"sqlite:///{tmp_path / 'missing-dir' / 'mlflow.db'}")
    assert not cache.exists()  # nothing was built for any of them


@pytest.mark.slow
def test_an_unusable_cache_falls_back_to_mlflow_creating_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("SWEEPS_CACHE", str(blocker / "sweeps"))  # cannot be made
    db = tmp_path / "mlflow.db"
    assert not seed_sqlite_store(f"sqlite:///{db}")
    assert not db.exists()
    tracker = MlflowTracker(f"sqlite:///{db}", tmp_path / "mlartifacts")
    experiment = tracker.ensure_experiment("study")
    assert MlflowClient(tracking_uri=f"sqlite:///{db}").get_experiment(experiment).name == "study"
    assert not list(tmp_path.glob(".*seeding"))


@pytest.mark.slow
def test_a_store_created_meanwhile_is_not_overwritten(cache: Path, tmp_path: Path) -> None:
    """Another process (or MLflow) creating the file first wins; the copy is discarded."""
    from tracking import mlflow_store

    assert seed_sqlite_store(f"sqlite:///{tmp_path / 'first.db'}")  # builds the template
    target = tmp_path / "mlflow.db"
    target.write_bytes(b"created by someone else")
    mlflow_store._copy_new(template_path(), target)
    assert target.read_bytes() == b"created by someone else"
    assert not list(tmp_path.glob(".*seeding"))

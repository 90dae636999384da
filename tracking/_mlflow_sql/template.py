"""The empty MLflow store that new SQLite stores are copied from (`tracking.mlflow_store`)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore


def build_template(db: Path, artifact_root: str) -> None:
    """MLflow creates an empty store at `db`; its default experiment is dropped, so that
    MLflow makes it anew, with each copy's own artifact location, when a copy is opened."""
    store = SqlAlchemyStore(f"sqlite:///{db}", artifact_root)  # type: ignore[no-untyped-call]
    store.engine.dispose()
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute("DELETE FROM experiments")
    finally:
        conn.close()

"""The fence around MLflow's private names (tracking._mlflow_sql): whatever makes the fast
path unsafe — an untested schema, a private name gone, SWEEPS_MLFLOW_PUBLIC=1 — sends runs
through MlflowClient, with the same runs read back and at most one WARNING."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient

from tests.tracking.test_mlflow_sql import Pair, Side, assert_same_runs, record, varied_records
from tracking import _mlflow_sql
from tracking._mlflow_sql import (
    FORCE_PUBLIC_ENV,
    TESTED_SCHEMA_REVISIONS,
    open_bulk_writer,
    schema_revision,
)
from tracking.mlflow_runs import MlflowTracker
from tracking.mlflow_store import seed_sqlite_store, template_path


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the process's first fallback; none forces the public path unless it
    says so."""
    monkeypatch.setattr(_mlflow_sql.MLFLOW, "warned", set())
    monkeypatch.delenv(FORCE_PUBLIC_ENV, raising=False)


def fence_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == f"sweeps.{_mlflow_sql.__name__}" and r.levelno == logging.WARNING
    ]


class Counting(MlflowClient):
    """An MlflowClient that counts create_run calls: the client path makes one per run,
    the bulk path none."""

    def __init__(self, tracking_uri: str) -> None:
        super().__init__(tracking_uri=tracking_uri)
        self.created = 0

    def create_run(self, *args: Any, **kwargs: Any) -> Any:
        self.created += 1
        return super().create_run(*args, **kwargs)


def counted_side(tmp_path: Path, name: str) -> Side:
    uri = f"sqlite:///{tmp_path}/{name}.db"
    client = Counting(uri)
    root = tmp_path / f"{name}-art"
    return Side(uri, root, client, MlflowTracker(uri, root, client))


@pytest.mark.slow
def test_public_switch_takes_the_client_path_with_the_same_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fast, public = counted_side(tmp_path, "fast"), counted_side(tmp_path, "public")
    recs = varied_records("switch")
    fast_parent = fast.tracker.create_parent_run(fast.tracker.ensure_experiment("s"), "s")
    fast_runs = fast.tracker.log_trials(fast_parent, recs)
    monkeypatch.setenv(FORCE_PUBLIC_ENV, "1")
    public_parent = public.tracker.create_parent_run(public.tracker.ensure_experiment("s"), "s")
    public_runs = public.tracker.log_trials(public_parent, recs)
    assert isinstance(fast.client, Counting) and isinstance(public.client, Counting)
    assert fast.client.created == 1  # the parent run only: the trials went in bulk
    assert public.client.created == 1 + len(recs)
    assert open_bulk_writer(fast.uri) is None  # the switch, not the store, decides
    parents = (fast_parent.run_id, public_parent.run_id)
    assert_same_runs(Pair("sqlite", fast, public), fast_runs, public_runs, parents, tmp_path)
    assert fence_warnings(caplog) == []  # asked for, so nothing to announce


@pytest.mark.slow
def test_a_private_name_gone_degrades_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow.utils.validation as real

    # As an MLflow that dropped a private validator: the fenced modules no longer import it,
    # while MLflow's own modules keep the bindings they already hold.
    dropped = types.ModuleType(real.__name__)
    vars(dropped).update({k: v for k, v in vars(real).items() if k != "_validate_param"})
    monkeypatch.setitem(sys.modules, real.__name__, dropped)
    for module in ("tracking._mlflow_sql.bulk", "tracking._mlflow_sql.rows"):
        monkeypatch.delitem(sys.modules, module)
    for name in ("one", "two"):  # two trackers, one process: one warning
        s = counted_side(tmp_path, name)
        parent = s.tracker.create_parent_run(s.tracker.ensure_experiment(name), name)
        recs = [record(name, 0, epochs=5), record(name, 1, epochs=5)]
        run_ids = s.tracker.log_trials(parent, recs)
        assert isinstance(s.client, Counting)
        assert s.client.created == 1 + len(recs)
        for run_id, rec in zip(run_ids, recs, strict=True):
            run = s.client.get_run(run_id)
            assert run.info.status == "FINISHED"
            assert run.data.metrics["val_loss"] == rec.final["val_loss"]
    [warning] = fence_warnings(caplog)
    assert "_validate_param" in warning


def test_untested_schema_revision_degrades_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    tracker = MlflowTracker(uri, tmp_path / "art", client)
    experiment_id = tracker.ensure_experiment("future")  # MLflow creates the store
    parent = tracker.create_parent_run(experiment_id, "future")
    engine = sa.create_engine(uri)
    try:
        assert schema_revision(engine) in TESTED_SCHEMA_REVISIONS
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00000000000'"))
    finally:
        engine.dispose()
    assert open_bulk_writer(uri) is None
    # This client verified the schema when it opened the store, so its path still works.
    (run_id,) = tracker.log_trials(parent, [record("future", 0, epochs=5)])
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["val_loss"] == record("future", 0, epochs=5).final["val_loss"]
    [warning] = fence_warnings(caplog)
    assert "f00000000000" in warning


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of this test's own: seeding a store must build the template first."""
    monkeypatch.setenv("SWEEPS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.slow
def test_template_gone_lets_mlflow_create_the_store(
    own_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "tracking._mlflow_sql.template", None)  # not importable
    for name in ("one", "two"):
        uri = f"sqlite:///{tmp_path}/{name}.db"
        assert not seed_sqlite_store(uri)
        tracker = MlflowTracker(uri, tmp_path / f"{name}-art")
        assert tracker.ensure_experiment(name)  # MLflow made the store itself
    assert not template_path().exists()
    [warning] = fence_warnings(caplog)
    assert "template" in warning


def test_public_switch_leaves_the_store_to_mlflow(
    own_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(FORCE_PUBLIC_ENV, "1")
    assert not seed_sqlite_store(f"sqlite:///{tmp_path}/mlflow.db")
    assert not template_path().exists()
    assert not (tmp_path / "mlflow.db").exists()
    assert fence_warnings(caplog) == []

"""The bulk fast path (tracking._mlflow_sql) against MLflow's own client path.

Every record set is logged twice, into two fresh stores of the same backend: through
`log_trials` (one SQL transaction) and through the per-run MlflowClient calls
(`bulk=False`). What MlflowClient reads back must be the same, run ids aside.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
import sqlalchemy as sa
from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tests.conftest import create_postgres_database, drop_postgres_database
from tests.tracking.records import trial_record
from tracking._mlflow_sql import open_bulk_writer
from tracking._mlflow_sql.bulk import BulkRunWriter, new_run_id
from tracking.errors import TrackingError
from tracking.mlflow_runs import MlflowTracker, ParentRef
from tracking.mlflow_specs import Attached, RunSpec
from tracking.records import TrialRecord, TrialState
from trainer.metrics import ACCURACY_METRICS, METRICS

HOSTILE_STUDY = 'it\'s "quoted" ../../escape; DROP TABLE runs; -- λ→∞ %s %(x)s'
RUN_TABLES = ("runs", "tags", "params", "metrics", "latest_metrics")


@dataclass(frozen=True)
class Side:
    uri: str
    artifact_root: Path
    client: MlflowClient
    tracker: MlflowTracker


@dataclass(frozen=True)
class Pair:
    """Two stores of one backend: `fast` logs in bulk, `slow` through MlflowClient calls."""

    backend: str
    fast: Side
    slow: Side


def side(uri: str, artifact_root: Path, *, bulk: bool) -> Side:
    client = MlflowClient(tracking_uri=uri)
    return Side(uri, artifact_root, client, MlflowTracker(uri, artifact_root, client, bulk=bulk))


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    base = tmp_path_factory.mktemp("bulk")
    if request.param == "sqlite":
        uris = [f"sqlite:///{base}/fast.db", f"sqlite:///{base}/slow.db"]
        yield Pair(
            "sqlite",
            side(uris[0], base / "fast-art", bulk=True),
            side(uris[1], base / "slow-art", bulk=False),
        )
        return
    databases = [create_postgres_database("sweeps_bulk") for _ in range(2)]
    try:
        (fast_uri, _), (slow_uri, _) = databases
        yield Pair(
            "postgres",
            side(fast_uri, base / "fast-art", bulk=True),
            side(slow_uri, base / "slow-art", bulk=False),
        )
    finally:
        for url, admin in databases:
            drop_postgres_database(url, admin)


_names = iter(range(1_000_000))


def study_parents(pair: Pair, name: str | None = None) -> tuple[str, ParentRef, ParentRef]:
    study = name or f"study-{next(_names)}"
    parents = []
    for s in (pair.fast, pair.slow):
        experiment_id = s.tracker.ensure_experiment(study)
        parents.append(s.tracker.create_parent_run(experiment_id, study))
    return study, parents[0], parents[1]


def record(
    study: str,
    number: int,
    *,
    epochs: int = 100,
    history: dict[str, list[float]] | None = None,
    params: dict[str, Any] | None = None,
    weights: bytes | None = b"\x80\x02weights\x00\xff" * 100,
    **kwargs: Any,
) -> TrialRecord:
    own = {"lambda": 3.0 + number} | (params or {})
    return trial_record(
        study,
        number,
        epochs=epochs,
        history_=history,
        params=own,
        weights=weights,
        duration_s=0.125 + number,
        span_ms=700,
        **kwargs,
    )


def varied_records(study: str) -> list[TrialRecord]:
    odd = [math.nan, math.inf, -math.inf, 1.7976931348623157e308, -0.0, 5e-324, 1e-300]
    hostile = {"penalty": "l2'; DROP TABLE params; --", "note": "quote ' \" \\ λ\n\ttab %s"}
    return [
        record(study, 0),
        record(study, 1, epochs=37, state=TrialState.PRUNED, value=None),
        record(
            study,
            2,
            epochs=3,
            state=TrialState.FAIL,
            value=None,
            weights=None,
            error="RuntimeError: loss is nan\n" + "é" * 2000,
        ),
        record(study, 3, history={name: odd for name in METRICS}, value=math.nan),
        record(study, 4, params=hostile, value=math.inf),
        record(
            study,
            5,
            epochs=250,  # 5 x 250 + 2 points: more than one log_batch of 1000
            params={f"task.option_{i:03d}": i for i in range(150)},  # more than 100 params
        ),
        record(
            study,
            6,
            history={},
            final={name: None for name in METRICS},
            value=None,
            state=TrialState.FAIL,
            error="died before the first epoch",
        ),
        record(study, 7, history={}, final={name: 0.5 for name in METRICS}, weights=b""),
        record(study, 8, history={"train_loss": [1.0, 1.0, 1.0]}, value=1.0),
        classified(record(study, 9, epochs=4)),
    ]


def classified(rec: TrialRecord) -> TrialRecord:
    """A classification task's record: final accuracies beside the per-epoch metrics."""
    accuracy = dict(zip(ACCURACY_METRICS, (1.0, 0.9375, 0.875), strict=True))
    return replace(rec, final=rec.final | accuracy)


def client_view(s: Side, run_id: str, parent_id: str | None, tmp: Path) -> str:
    """Everything MlflowClient shows of a run, ids masked, as one comparable JSON text."""
    run = s.client.get_run(run_id)
    history = {
        key: [
            (m.key, m.value, m.timestamp, m.step) for m in s.client.get_metric_history(run_id, key)
        ]
        for key in sorted({*run.data.metrics, *METRICS})
    }
    artifacts = [(a.path, a.is_dir, a.file_size) for a in s.client.list_artifacts(run_id)]
    contents = {
        a.path: Path(s.client.download_artifacts(run_id, a.path, str(mkdir(tmp / run_id))))
        .read_bytes()
        .hex()
        for a in s.client.list_artifacts(run_id)
    }
    view = {
        "run": run.to_dictionary(),
        "history": history,
        "artifacts": artifacts,
        "files": contents,
    }
    text = json.dumps(view, sort_keys=True)  # NaN and inf become NaN/Infinity: comparable
    text = text.replace(run_id, "<run>").replace(s.artifact_root.resolve().as_uri(), "<root>")
    return text if parent_id is None else text.replace(parent_id, "<parent>")


def mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def assert_same_runs(
    pair: Pair, fast: list[str], slow: list[str], parents: tuple[str | None, str | None], tmp: Path
) -> None:
    assert len(fast) == len(slow)
    for fast_id, slow_id in zip(fast, slow, strict=True):
        ours = client_view(pair.fast, fast_id, parents[0], tmp / "fast")
        theirs = client_view(pair.slow, slow_id, parents[1], tmp / "slow")
        assert ours == theirs


@pytest.mark.slow
def test_bulk_equals_client_path(pair: Pair, tmp_path: Path) -> None:
    study, fast_parent, slow_parent = study_parents(pair, f"{HOSTILE_STUDY} {next(_names)}")
    recs = varied_records(study)
    fast = pair.fast.tracker.log_trials(fast_parent, recs)
    slow = [pair.slow.tracker.log_trial(slow_parent, rec) for rec in recs]
    assert_same_runs(pair, fast, slow, (fast_parent.run_id, slow_parent.run_id), tmp_path)
    statuses = [pair.fast.client.get_run(run_id).info.status for run_id in fast]
    assert "RUNNING" not in statuses
    # The classification record's accuracies are final metrics at the last epoch's step.
    classified_run = pair.fast.client.get_run(fast[-1])
    for name in ACCURACY_METRICS:
        assert classified_run.data.metrics[name] == recs[-1].final[name]
        [point] = pair.fast.client.get_metric_history(fast[-1], name)
        assert point.step == 4
    assert not ACCURACY_METRICS & pair.fast.client.get_run(fast[0]).data.metrics.keys()


def test_log_trial_and_log_run_take_the_fast_path_too(pair: Pair, tmp_path: Path) -> None:
    study, fast_parent, slow_parent = study_parents(pair)
    rec = record(study, 11, epochs=20)
    fast = pair.fast.tracker.log_trial(fast_parent, rec)
    slow = pair.slow.tracker.log_trial(slow_parent, rec)
    assert_same_runs(pair, [fast], [slow], (fast_parent.run_id, slow_parent.run_id), tmp_path)
    # `sweeps train`: a run without parent.
    fast = pair.fast.tracker.log_run(fast_parent.experiment_id, rec)
    slow = pair.slow.tracker.log_run(slow_parent.experiment_id, rec)
    assert_same_runs(pair, [fast], [slow], (None, None), tmp_path)
    assert "mlflow.parentRunId" not in pair.fast.client.get_run(fast).data.tags


def test_search_finds_bulk_runs(pair: Pair) -> None:
    study, fast_parent, slow_parent = study_parents(pair)
    recs = [record(study, n, epochs=10) for n in (3, 0, 2, 1)]
    recs.append(record(study, 4, epochs=4, state=TrialState.PRUNED, value=None))
    pair.fast.tracker.log_trials(fast_parent, recs)
    pair.slow.tracker.log_trials(slow_parent, recs)
    searches = [
        ("tags.`sweeps.role` = 'trial' and metrics.val_loss < 3.5", ["metrics.val_loss ASC"]),
        ("tags.`sweeps.state` = 'PRUNED'", []),
        ("params.penalty = 'l2' and attributes.status = 'FINISHED'", ["metrics.w_norm DESC"]),
        ("tags.mlflow.parentRunId = '{parent}'", ["attributes.start_time DESC"]),
        ("attributes.run_name LIKE '#2 %'", []),
    ]
    for filter_string, order_by in searches:
        found = []
        for s, parent in ((pair.fast, fast_parent), (pair.slow, slow_parent)):
            runs = s.client.search_runs(
                [parent.experiment_id],
                filter_string.format(parent=parent.run_id),
                order_by=order_by,
            )
            found.append([r.data.tags["sweeps.trial_number"] for r in runs])
        assert found[0] == found[1] != [], filter_string
    numbers = pair.fast.tracker.trial_runs(fast_parent.experiment_id)
    assert sorted(numbers) == [0, 1, 2, 3, 4]
    assert numbers[4][0].status == "KILLED"


def run_rows(engine: sa.Engine, run_ids: list[str]) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table: conn.execute(
                sa.text(f"SELECT count(*) FROM {table} WHERE run_uuid IN :ids").bindparams(
                    sa.bindparam("ids", expanding=True)
                ),
                {"ids": run_ids},
            ).scalar_one()
            for table in RUN_TABLES
        }


def spec(number: int) -> RunSpec:
    return RunSpec(
        run_name=f"#{number}",
        status="FINISHED",
        start_time_ms=1_700_000_000_000,
        end_time_ms=1_700_000_001_000,
        tags={"sweeps.trial_number": str(number)},
        params=[Param("lambda", "1.0")],
        metrics=[("val_loss", 1.0 / s, 1_700_000_000_000 + s, s) for s in range(1, 50)],
        files={"config.json": b"{}"},
    )


def artifact_dir(s: Side, experiment_id: str) -> Path:
    location = s.client.get_experiment(experiment_id).artifact_location
    return Path(unquote(urlparse(location).path))


def writer(s: Side, new_id: Callable[[], str] = new_run_id) -> BulkRunWriter:
    opened = open_bulk_writer(s.uri)
    assert isinstance(opened, BulkRunWriter)
    return BulkRunWriter(opened.engine, new_id)


def test_duplicate_key_in_the_transaction_leaves_nothing(pair: Pair) -> None:
    s = pair.fast
    experiment_id = s.tracker.ensure_experiment(f"dup-{next(_names)}")
    existing = s.client.create_run(experiment_id).info.run_id  # no artifact dir yet
    fresh = [new_run_id(), new_run_id()]
    ids = iter([*fresh, existing])  # the third run collides with `existing` in `runs`
    bulk = writer(s, lambda: next(ids))
    with pytest.raises(MlflowException, match=r"(?i)unique|duplicate"):
        bulk.log_runs(experiment_id, [spec(0), spec(1), spec(2)])
    assert run_rows(bulk.engine, fresh) == dict.fromkeys(RUN_TABLES, 0)
    root = artifact_dir(s, experiment_id)
    assert not root.exists() or list(root.iterdir()) == []
    assert s.client.get_run(existing).info.status == "RUNNING"  # untouched
    assert [r.info.run_id for r in s.client.search_runs([experiment_id])] == [existing]


def test_a_failed_batch_removes_its_attached_archive(pair: Pair) -> None:
    s = pair.fast
    experiment_id = s.tracker.ensure_experiment(f"att-{next(_names)}")
    parent = s.client.create_run(experiment_id)
    ids = iter([new_run_id(), parent.info.run_id])  # the second run collides (its folder)
    bulk = writer(s, lambda: next(ids))
    attached = Attached(parent.info.run_id, "rounds/trials-000000-000001.zip", b"zip")
    with pytest.raises(FileExistsError):
        bulk.log_runs(experiment_id, [spec(0), spec(1)], attached)
    folder = Path(unquote(urlparse(parent.info.artifact_uri).path))
    assert not (folder / "rounds" / "trials-000000-000001.zip").exists()
    # and with the runs logged, the archive is there
    logged = writer(s).log_runs(experiment_id, [spec(0), spec(1)], attached)
    assert logged is not None and (folder / attached.path).read_bytes() == b"zip"


POISON_TRIGGER = {
    "sqlite": [
        "CREATE TRIGGER poison BEFORE INSERT ON latest_metrics WHEN NEW.key = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
    ],
    "postgres": [
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.key = 'poison' THEN RAISE EXCEPTION 'injected fault'; END IF; "
        "RETURN NEW; END $$",
        "CREATE TRIGGER poison BEFORE INSERT ON latest_metrics "
        "FOR EACH ROW EXECUTE FUNCTION poison()",
    ],
}
DROP_POISON = {
    "sqlite": ["DROP TRIGGER poison"],
    "postgres": ["DROP TRIGGER poison ON latest_metrics", "DROP FUNCTION poison()"],
}


def test_failure_late_in_the_transaction_leaves_nothing(pair: Pair) -> None:
    # Injected fault: a trigger fails the last insert (latest_metrics) of the last run, when
    # the runs, tags, params and metrics rows of all runs are in.
    s = pair.fast
    experiment_id = s.tracker.ensure_experiment(f"late-{next(_names)}")
    made: list[str] = []

    def remembered() -> str:
        made.append(new_run_id())
        return made[-1]

    bulk = writer(s, remembered)
    poisoned = spec(2)
    poisoned = replace(poisoned, metrics=[*poisoned.metrics, ("poison", 1.0, 0, 0)])
    with bulk.engine.begin() as conn:
        for sql in POISON_TRIGGER[pair.backend]:
            conn.exec_driver_sql(sql)
    try:
        with pytest.raises(MlflowException, match="injected fault"):
            bulk.log_runs(experiment_id, [spec(0), spec(1), poisoned])
    finally:
        with bulk.engine.begin() as conn:
            for sql in DROP_POISON[pair.backend]:
                conn.exec_driver_sql(sql)
    assert len(made) == 3
    assert run_rows(bulk.engine, made) == dict.fromkeys(RUN_TABLES, 0)
    assert not any((artifact_dir(s, experiment_id) / run_id).exists() for run_id in made)
    assert s.client.search_runs([experiment_id]) == []


def test_artifact_write_failure_logs_no_run(pair: Pair) -> None:
    s = pair.fast
    study = f"blocked-{next(_names)}"
    experiment_id = s.tracker.ensure_experiment(study)
    parent = s.tracker.create_parent_run(experiment_id, study)
    blocked = artifact_dir(s, experiment_id)
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_bytes(b"a file where the experiment's artifact folder belongs")
    try:
        with pytest.raises(TrackingError, match=r"cannot log 2 trials \(0, 1\)"):
            s.tracker.log_trials(parent, [record(study, 0), record(study, 1)])
    finally:
        blocked.unlink()
    assert [r.info.run_id for r in s.client.search_runs([experiment_id])] == [parent.run_id]


def test_a_run_directory_in_the_way_leaves_no_run_nor_directory_of_ours(pair: Pair) -> None:
    """Files are written by several threads (ARTIFACT_WRITERS): one run failing leaves
    none of the batch's directories, only the one that was there already."""
    s = pair.fast
    experiment_id = s.tracker.ensure_experiment(f"inway-{next(_names)}")
    ids = [new_run_id() for _ in range(6)]
    in_the_way = artifact_dir(s, experiment_id) / ids[4]
    in_the_way.mkdir(parents=True)
    bulk = writer(s, iter(ids).__next__)
    with pytest.raises(FileExistsError):
        bulk.log_runs(experiment_id, [spec(n) for n in range(6)])
    assert run_rows(bulk.engine, ids) == dict.fromkeys(RUN_TABLES, 0)
    assert list(artifact_dir(s, experiment_id).iterdir()) == [in_the_way]


def test_remote_artifact_location_falls_back(pair: Pair) -> None:
    s = pair.fast
    experiment_id = s.client.create_experiment(
        f"remote-{next(_names)}", artifact_location="s3://bucket/never-touched"
    )
    assert writer(s).log_runs(experiment_id, [spec(0)]) is None
    assert s.client.search_runs([experiment_id]) == []


def test_no_fast_path_for_servers_or_other_uris() -> None:
    for uri in ("http://127.0.0.1:1", "https://mlflow.example", "file:///tmp/mlruns", "databricks"):
        assert open_bulk_writer(uri) is None

"""MlflowTracker against a real SQLite-backed MLflow store (one per module: ~2 s to create)."""

from __future__ import annotations

import os

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # before mlflow is imported
os.environ["DO_NOT_TRACK"] = "true"
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
import torch
from mlflow.entities import Experiment
from mlflow.tracking import MlflowClient

from tests.tracking.records import trial_record
from tracking import mlflow_runs
from tracking.errors import TrackingError
from tracking.mlflow_runs import MlflowTracker, ParentRef
from tracking.records import TRIAL_COLUMNS, TrialRecord, TrialState
from trainer.metrics import METRICS

PNG_HEADER = b"\x89PNG\r\n\x1a\n"
PASSWORD = "hunter2-s3cret"


@dataclass(frozen=True)
class Store:
    base: Path
    uri: str
    artifact_root: Path
    client: MlflowClient
    tracker: MlflowTracker


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    base = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{base}/mlflow.db"
    artifact_root = base / "mlartifacts"
    with pytest.MonkeyPatch.context() as mp:
        # Anything MLflow writes relative to the working directory lands in `base` too,
        # where test_hostile_study_name_writes_only_under_artifact_root looks for it.
        mp.chdir(base)
        client = MlflowClient(tracking_uri=uri)
        yield Store(base, uri, artifact_root, client, MlflowTracker(uri, artifact_root, client))


_study_counter = iter(range(1_000_000))


@pytest.fixture
def parent(store: Store) -> ParentRef:
    """A fresh study (experiment + parent run) in the shared store."""
    name = f"study-{next(_study_counter)}"
    experiment_id = store.tracker.ensure_experiment(name)
    return store.tracker.create_parent_run(experiment_id, name)


def weights_bytes(seed: int = 0) -> tuple[dict[str, torch.Tensor], bytes]:
    gen = torch.Generator().manual_seed(seed)
    state = {"linear.weight": torch.randn(1, 200, generator=gen), "linear.bias": torch.zeros(1)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return state, buffer.getvalue()


def record(
    study: str,
    number: int,
    *,
    penalty: str = "l2",
    lambda_: float | None = 3.1622776601683795,
    epochs: int = 5,
    params: dict[str, Any] | None = None,
    **kwargs: Any,
) -> TrialRecord:
    own = {"penalty": penalty, "lambda": lambda_, "device": "cpu"} | (params or {})
    return trial_record(study, number, epochs=epochs, params=own, **kwargs)


def study_of(store: Store, parent: ParentRef) -> str:
    return str(store.client.get_run(parent.run_id).data.tags["sweeps.study"])


def download(store: Store, run_id: str, path: str, tmp_path: Path) -> bytes:
    local = store.client.download_artifacts(run_id, path, str(tmp_path))
    return Path(local).read_bytes()


def test_experiment_per_study_created_once(store: Store) -> None:
    first = store.tracker.ensure_experiment("once")
    again = store.tracker.ensure_experiment("once")
    other_process = MlflowTracker(store.uri, store.artifact_root)  # its own client, lazily
    assert first == again == other_process.ensure_experiment("once")
    experiment = store.client.get_experiment(first)
    assert experiment.name == "once"
    assert experiment.artifact_location.startswith(store.artifact_root.resolve().as_uri())


def test_experiment_created_meanwhile_by_another_process(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race cannot be caused on demand: the other process creates the experiment
    # between our lookup (which found nothing) and our create_experiment.
    name = "raced"
    theirs = MlflowTracker(store.uri, store.artifact_root).ensure_experiment(name)
    client = MlflowClient(tracking_uri=store.uri)
    real_lookup = client.get_experiment_by_name
    lookups: list[str] = []

    def lookup_before_the_other_process(experiment_name: str) -> Experiment | None:
        lookups.append(experiment_name)
        return None if len(lookups) == 1 else real_lookup(experiment_name)

    monkeypatch.setattr(client, "get_experiment_by_name", lookup_before_the_other_process)
    ours = MlflowTracker(store.uri, store.artifact_root, client).ensure_experiment(name)
    assert ours == theirs
    assert lookups == [name, name]  # looked up, lost the race to create, looked up again


def test_deleted_experiment_is_restored(store: Store) -> None:
    experiment_id = store.tracker.ensure_experiment("deleted-then-rerun")
    store.client.delete_experiment(experiment_id)
    assert store.tracker.ensure_experiment("deleted-then-rerun") == experiment_id
    assert store.client.get_experiment(experiment_id).lifecycle_stage == "active"


def test_parent_and_children_with_full_history(
    store: Store, parent: ParentRef, tmp_path: Path
) -> None:
    study = study_of(store, parent)
    epochs = 7
    tensors, blob = weights_bytes()
    recs = [record(study, n, epochs=epochs, weights=blob) for n in range(3)]
    run_ids = [store.tracker.log_trial(parent, rec) for rec in recs]

    parent_run = store.client.get_run(parent.run_id)
    assert parent_run.info.run_name == study
    assert parent_run.info.status == "RUNNING"
    assert parent_run.data.tags["sweeps.role"] == "parent"
    for rec, run_id in zip(recs, run_ids, strict=True):
        run = store.client.get_run(run_id)
        assert run.info.experiment_id == parent.experiment_id
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"#{rec.number} l2 λ=3.16"
        assert run.info.start_time == rec.start_time_ms
        assert run.info.end_time == rec.end_time_ms
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parent.run_id
        assert tags["sweeps.study"] == study
        assert tags["sweeps.trial_number"] == str(rec.number)
        assert tags["sweeps.state"] == "COMPLETE"
        assert tags["sweeps.device"] == "cpu"
        assert tags["sweeps.role"] == "trial"
        assert "sweeps.pruned" not in tags
        assert run.data.params == {k: str(v) for k, v in rec.params.items()}
        assert run.data.params["l1_ratio"] == "None"
        for name in METRICS:
            points = sorted(store.client.get_metric_history(run_id, name), key=lambda m: m.step)
            assert [m.step for m in points] == list(range(1, epochs + 1))
            assert [m.value for m in points] == rec.history[name]
        assert run.data.metrics["value"] == rec.value
        assert run.data.metrics["duration_s"] == rec.duration_s

        config = json.loads(download(store, run_id, "config.json", tmp_path / run_id))
        assert config == rec.params | {
            "study": study,
            "number": rec.number,
            "state": "COMPLETE",
        }
        raw = download(store, run_id, "model_state_dict.pt", tmp_path / run_id)
        loaded = torch.load(io.BytesIO(raw), weights_only=True)
        assert loaded.keys() == tensors.keys()
        for key, tensor in tensors.items():
            assert torch.equal(loaded[key], tensor)


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (TrialState.COMPLETE, "FINISHED"),
        (TrialState.PRUNED, "KILLED"),
        (TrialState.FAIL, "FAILED"),
    ],
)
def test_run_status_follows_trial_state(
    store: Store, parent: ParentRef, state: TrialState, status: str
) -> None:
    error = "RuntimeError: loss is nan\n" + "x" * 1000 if state is TrialState.FAIL else None
    rec = record(study_of(store, parent), 4, state=state, error=error, value=None)
    run = store.client.get_run(store.tracker.log_trial(parent, rec))
    assert run.info.status == status
    assert run.data.tags["sweeps.state"] == state.value
    assert (run.data.tags.get("sweeps.pruned") == "true") == (state is TrialState.PRUNED)
    if error is not None:
        assert run.data.tags["sweeps.error"] == error[:500]
    else:
        assert "sweeps.error" not in run.data.tags
    assert "value" not in run.data.metrics


def test_unfinished_trial_is_refused(store: Store, parent: ParentRef) -> None:
    rec = record(study_of(store, parent), 0, state=TrialState.RUNNING)
    with pytest.raises(ValueError, match="only finished trials"):
        store.tracker.log_trial(parent, rec)


def test_failure_while_logging_leaves_run_failed(
    store: Store, parent: ParentRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk or a dropped connection during the upload cannot be caused on demand.
    def broken_upload(run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.client, "log_artifacts", broken_upload)
    rec = record(study_of(store, parent), 9, weights=weights_bytes()[1])
    # The client path (as against an MLflow server); the bulk path has its own fault tests.
    tracker = MlflowTracker(store.uri, store.artifact_root, store.client, bulk=False)
    with pytest.raises(TrackingError, match="No space left on device"):
        tracker.log_trial(parent, rec)
    monkeypatch.undo()

    (run,) = store.tracker.trial_runs(parent.experiment_id)[9]
    assert run.status == "FAILED"
    assert store.client.get_run(run.run_id).info.end_time is not None


def test_hostile_study_name_writes_only_under_artifact_root(store: Store, tmp_path: Path) -> None:
    name = 'it\'s "quoted" ../../../escape me'
    experiment_id = store.tracker.ensure_experiment(name)
    parent = store.tracker.create_parent_run(experiment_id, name)
    run_id = store.tracker.log_trial(parent, record(name, 0, weights=weights_bytes()[1]))
    store.tracker.finish_study(parent, [record(name, 0)], {"../../outside.txt": b"x"})

    assert store.client.get_experiment(experiment_id).name == name
    assert store.client.get_run(parent.run_id).info.run_name == name
    root = store.artifact_root.resolve()
    location = store.client.get_experiment(experiment_id).artifact_location
    experiment_dir = Path(unquote(urlparse(location).path))
    assert experiment_dir.parent == root
    for run in (run_id, parent.run_id):
        assert (experiment_dir / run / "artifacts").is_dir()
    assert (experiment_dir / parent.run_id / "artifacts" / "outside.txt").read_bytes() == b"x"
    written = [p for p in store.base.rglob("*") if p.is_file()]
    outside = [p for p in written if root not in p.resolve().parents]
    store_files = {"mlflow.db", "mlflow.db-journal", "mlflow.db-wal", "mlflow.db-shm"}  # WAL
    assert {p.name for p in outside} <= store_files


def test_secrets_are_masked_in_params_tags_and_config(
    store: Store, parent: ParentRef, tmp_path: Path
) -> None:
    url = f"postgresql+psycopg://sweeps:{PASSWORD}@db.example:5432/sweeps"
    rec = record(
        study_of(store, parent),
        1,
        params={"storage": url},
        state=TrialState.FAIL,
        error=f"OperationalError: cannot connect to {url}",
    )
    run_id = store.tracker.log_trial(parent, rec)
    run = store.client.get_run(run_id)
    assert run.data.params["storage"] == "postgresql+psycopg://sweeps:***@db.example:5432/sweeps"
    assert "***" in run.data.tags["sweeps.error"]
    config = download(store, run_id, "config.json", tmp_path).decode()
    for text in (*run.data.params.values(), *run.data.tags.values(), config):
        assert PASSWORD not in text


def test_history_beyond_one_batch_is_logged_completely(store: Store, parent: ParentRef) -> None:
    epochs = 300  # 5 metrics x 300 epochs + 2 finals = 1502 points
    extra = {f"task.option_{i:03d}": i for i in range(150)}  # and 158 params: > 100 a call
    rec = record(study_of(store, parent), 2, epochs=epochs, params=extra)
    run_id = store.tracker.log_trial(parent, rec)
    run = store.client.get_run(run_id)
    assert len(run.data.params) == len(rec.params) == 158
    for name in METRICS:
        points = sorted(store.client.get_metric_history(run_id, name), key=lambda m: m.step)
        assert [m.step for m in points] == list(range(1, epochs + 1))
        assert [m.value for m in points] == rec.history[name]


def test_finish_study_attaches_figure_table_and_extras(
    store: Store, parent: ParentRef, tmp_path: Path
) -> None:
    study = study_of(store, parent)
    recs = [
        record(study, 0, penalty="none", lambda_=None, value=0.9),
        record(study, 1, lambda_=0.01, value=0.5),
        record(study, 2, penalty="l1", lambda_=3.0, value=0.125),
        record(study, 3, state=TrialState.PRUNED, value=None),
        record(study, 4, state=TrialState.FAIL, value=None, error="boom"),
    ]
    recs = [replace(r, mlflow_run_id=store.tracker.log_trial(parent, r)) for r in recs]
    store.tracker.finish_study(parent, recs, {"optuna_history.png": PNG_HEADER + b"stub"})

    run = store.client.get_run(parent.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["best_value"] == 0.125
    assert run.data.tags["sweeps.best_trial"] == "2"
    names = {a.path for a in store.client.list_artifacts(parent.run_id)}
    assert names == {"lambda_curves.png", "trials.csv", "optuna_history.png"}
    png = download(store, parent.run_id, "lambda_curves.png", tmp_path)
    assert png.startswith(PNG_HEADER)

    table = download(store, parent.run_id, "trials.csv", tmp_path).decode()
    reader = csv.DictReader(io.StringIO(table))
    assert tuple(reader.fieldnames or ()) == TRIAL_COLUMNS
    rows = list(reader)
    assert [int(row["number"]) for row in rows] == [0, 1, 2, 3, 4]
    assert [row["state"] for row in rows] == ["COMPLETE"] * 3 + ["PRUNED", "FAIL"]
    assert [row["mlflow_run_id"] for row in rows] == [r.mlflow_run_id for r in recs]
    assert rows[0]["lambda"] == "" and rows[0]["penalty"] == "none"
    assert float(rows[1]["lambda"]) == 0.01
    assert float(rows[2]["w_norm"]) == recs[2].final["w_norm"]


def test_trial_runs_maps_numbers_to_runs(store: Store, parent: ParentRef) -> None:
    study = study_of(store, parent)
    first = store.tracker.log_trial(parent, record(study, 0))
    retried = store.tracker.log_trial(parent, record(study, 1, state=TrialState.FAIL))
    again = store.tracker.log_trial(parent, record(study, 1))
    runs = store.tracker.trial_runs(parent.experiment_id)
    assert sorted(runs) == [0, 1]
    assert [r.run_id for r in runs[0]] == [first]
    assert {r.run_id for r in runs[1]} == {retried, again}
    assert {(r.status, r.state) for r in runs[1]} == {("FAILED", "FAIL"), ("FINISHED", "COMPLETE")}
    assert all(r.trial_number == 1 for r in runs[1])


def test_a_run_of_no_study_is_not_a_trial_run_of_its_experiment(
    store: Store, parent: ParentRef
) -> None:
    """`sweeps train` runs (`log_run`) carry `sweeps.role=train`: a study's check, which
    counts and repairs the trial runs of its experiment, never sees them."""
    study = study_of(store, parent)
    trained = store.tracker.log_run(parent.experiment_id, record(study, 0))
    assert store.client.get_run(trained).data.tags["sweeps.role"] == "train"
    assert store.tracker.trial_runs(parent.experiment_id) == {}
    trial = store.tracker.log_trial(parent, record(study, 0))
    assert [r.run_id for r in store.tracker.trial_runs(parent.experiment_id)[0]] == [trial]


def test_trial_runs_reads_every_page(
    store: Store, parent: ParentRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = study_of(store, parent)
    expected = {n: store.tracker.log_trial(parent, record(study, n, epochs=1)) for n in range(5)}
    monkeypatch.setattr(mlflow_runs, "SEARCH_PAGE_SIZE", 2)  # 5 runs: 3 pages
    runs = store.tracker.trial_runs(parent.experiment_id)
    assert {n: [r.run_id for r in rs] for n, rs in runs.items()} == {
        n: [run_id] for n, run_id in expected.items()
    }


def test_terminate_and_state_tag(store: Store, parent: ParentRef) -> None:
    orphan = store.client.create_run(parent.experiment_id).info.run_id
    store.tracker.set_state_tag(orphan, TrialState.FAIL)
    store.tracker.terminate(orphan, "FAILED")
    run = store.client.get_run(orphan)
    assert run.info.status == "FAILED"
    assert run.data.tags["sweeps.state"] == "FAIL"


def test_unreachable_server_is_one_masked_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail now, not after minutes
    uri = f"http://sweeps:{PASSWORD}@127.0.0.1:1"
    with pytest.raises(TrackingError) as caught:
        MlflowTracker(uri).ensure_experiment("demo")
    message = str(caught.value)
    assert "\n" not in message
    assert PASSWORD not in message
    assert "http://sweeps:***@127.0.0.1:1" in message
    assert caught.value.__cause__ is None  # the raw error quotes the password


def test_unusable_store_path_is_tracking_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    tracker = MlflowTracker(f"sqlite:///{tmp_path}/a-file/mlflow.db", tmp_path / "art")
    with pytest.raises(TrackingError, match="cannot get or create the experiment"):
        tracker.ensure_experiment("demo")

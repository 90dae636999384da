"""A round's files in one archive on the parent run (`log_trials(..., archive=True)`),
through both ways of logging (the bulk writer and MlflowClient), and the best trials
given their own files back (`complete_curves`)."""

from __future__ import annotations

import os

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # before mlflow is imported
os.environ["DO_NOT_TRACK"] = "true"

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.tracking.records import trial_record
from tracking.mlflow_runs import MlflowTracker, ParentRef
from tracking.mlflow_specs import (
    HISTORY_FILE,
    archive_path,
    archived_files,
    read_history_csv,
    trial_files,
)
from tracking.mlflow_tags import ARCHIVE_TAG
from tracking.records import History, HistoryPolicy, TrialRecord
from trainer.metrics import METRICS

FINAL_ONLY = HistoryPolicy(History.FINAL, 1)


@dataclass(frozen=True)
class Side:
    client: MlflowClient
    tracker: MlflowTracker


@pytest.fixture(scope="module", params=["bulk", "client"])
def side(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Side]:
    base = tmp_path_factory.mktemp(f"archive-{request.param}")
    uri = f"sqlite:///{base}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    tracker = MlflowTracker(uri, base / "mlartifacts", client, bulk=request.param == "bulk")
    yield Side(client, tracker)


_names = iter(range(1_000_000))


def _parent(side: Side) -> ParentRef:
    name = f"round-{next(_names)}"
    return side.tracker.create_parent_run(side.tracker.ensure_experiment(name), name)


def _round(study: str, first: int, k: int) -> list[TrialRecord]:
    params = {"penalty": "l2", "lambda": 0.5, "device": "cpu"}
    return [
        trial_record(study, n, epochs=6, params=params, weights=f"weights of {n}".encode())
        for n in range(first, first + k)
    ]


def _download(side: Side, run_id: str, path: str, tmp_path: Path) -> bytes:
    return Path(side.client.download_artifacts(run_id, path, str(tmp_path))).read_bytes()


@pytest.mark.slow
def test_a_round_keeps_its_trials_files_in_one_archive(side: Side, tmp_path: Path) -> None:
    parent = _parent(side)
    recs = _round("s", 10, 4)
    run_ids = side.tracker.log_trials(parent, recs, FINAL_ONLY, archive=True)
    path = archive_path(recs)
    assert path == "rounds/trials-000010-000013.zip"
    data = _download(side, parent.run_id, path, tmp_path)
    for rec, run_id in zip(recs, run_ids, strict=True):
        run = side.client.get_run(run_id)
        assert run.data.tags[ARCHIVE_TAG] == path
        assert side.client.list_artifacts(run_id) == []  # no files of its own
        assert archived_files(data, rec.number) == trial_files(rec)


def test_the_best_trials_get_their_files_and_whole_curves_back(side: Side, tmp_path: Path) -> None:
    parent = _parent(side)
    recs = _round("s", 0, 3)
    run_ids = side.tracker.log_trials(parent, recs, FINAL_ONLY, archive=True)
    best = run_ids[1]
    assert [m.step for m in side.client.get_metric_history(best, "val_loss")] == [6]
    assert side.tracker.complete_curves([best]) == [best]
    names = {a.path for a in side.client.list_artifacts(best)}
    assert names == set(trial_files(recs[1]))
    history = read_history_csv(_download(side, best, HISTORY_FILE, tmp_path))
    for name in METRICS:
        logged = side.client.get_metric_history(best, name)
        values = [m.value for m in sorted(logged, key=lambda m: m.step)]
        assert values == pytest.approx(history[name], rel=1e-6)  # float32 in the file
    assert side.tracker.complete_curves([best]) == []  # done once
    assert side.client.list_artifacts(run_ids[0]) == []  # the others stay archived


def test_a_small_batch_or_no_archive_keeps_files_per_run(side: Side) -> None:
    parent = _parent(side)
    for recs, archive in ((_round("s", 0, 1), True), (_round("s", 1, 2), False)):
        for run_id in side.tracker.log_trials(parent, recs, FINAL_ONLY, archive=archive):
            assert ARCHIVE_TAG not in side.client.get_run(run_id).data.tags
            assert {a.path for a in side.client.list_artifacts(run_id)} >= {HISTORY_FILE}
    assert [a.path for a in side.client.list_artifacts(parent.run_id)] == []

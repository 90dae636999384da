"""A tracked study in rounds of 64 or more: each round's trial files in one archive on the
parent run, final values only as metrics (`--history auto`), the best trial of each
penalty with its own files and whole curves, `sweeps check` consistent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.sweeps.study_helpers import cli_env, run_cli
from tracking.mlflow_specs import HISTORY_FILE, archived_files, read_history_csv
from tracking.mlflow_tags import ARCHIVE_TAG
from tracking.records import LARGE_ROUND

pytestmark = pytest.mark.slow


def test_rounds_archive_their_files_and_the_best_trials_keep_theirs(tmp_path: Path) -> None:
    home = tmp_path / "h"
    env = cli_env(home)
    k = LARGE_ROUND
    args = ["--study", "a", "--penalties", "none,l2", "--epochs", "4", "--quiet"]
    done = run_cli("run", *args, "--trials", str(2 * k), "--batch", str(k), env=env)
    assert done.returncode == 0, done.stderr
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("a")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.`sweeps.role` = 'trial'")
    parent = runs[0].data.tags["mlflow.parentRunId"]
    archives = {
        path: Path(client.download_artifacts(parent, path, str(tmp_path))).read_bytes()
        for path in (
            f"rounds/trials-{0:06d}-{k - 1:06d}.zip",
            f"rounds/trials-{k:06d}-{2 * k - 1:06d}.zip",
        )
    }
    best = run_cli("best", "--study", "a", "--json", env=env)
    best_runs = {row["mlflow_run_id"] for row in json.loads(best.stdout)}
    assert len(best_runs) == 2  # one per penalty
    rows = json.loads(run_cli("trials", "--study", "a", "--json", env=env).stdout)
    val_loss = {row["number"]: row["val_loss"] for row in rows}
    assert len(runs) == 2 * k
    for run in runs:
        number = int(run.data.tags["sweeps.trial_number"])
        files = archived_files(archives[run.data.tags[ARCHIVE_TAG]], number)
        assert "config.json" in files  # and the history, unless it took another's result
        if run.data.tags.get("sweeps.reused_from") is None and val_loss[number] is not None:
            last = read_history_csv(files[HISTORY_FILE])["val_loss"][-1]
            assert last == pytest.approx(val_loss[number], rel=1e-6, nan_ok=True)
        own = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert own == (set(files) if run.info.run_id in best_runs else set())
        # --history auto: final values only in rounds this large; the best: whole curves
        steps = {m.step for m in client.get_metric_history(run.info.run_id, "val_loss")}
        if run.info.run_id in best_runs:
            assert steps == {1, 2, 3, 4}
        else:
            assert len(steps) == 1
    check = run_cli("check", "--study", "a", env=env)
    assert check.returncode == 0 and "consistent" in check.stdout, check.stdout + check.stderr

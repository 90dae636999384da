"""A tracked study end to end: Optuna, the results table and MLflow hold the same trials.

The study runs in this process through the real CLI (click's runner) so one trial can be
made to raise: a training error is the one fault no flag can cause. Everything else —
divergence, pruning, storage, MLflow's SQLite store and artifacts — is real.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

import sweeps.training
from sweeps.cli import cli
from tests.sweeps.study_helpers import cli_env, run_cli
from tests.tracking.test_results_sql import DOC_PORTABLE
from trainer import TrialConfig, TrialResult

EPOCHS = 20
FAILING_LAMBDA = 10.0  # the grid's middle point; its training raises
METRICS = ("train_loss", "val_loss", "test_loss", "w_norm", "penalty_value")
# none + l2 on the grid {1e-2, 1e1, 1e4}: λ=1e4 diverges (lr·λ = 30), λ=10 raises.
STUDY_ARGS = [
    "--penalties",
    "none,l2",
    "--sampler",
    "grid",
    "--grid-points",
    "3",
    "--lambda-min",
    "1e-2",
    "--lambda-max",
    "1e4",
    "--epochs",
    str(EPOCHS),
    "--pruner",
    "none",
    "--trials",
    "4",
    "--quiet",
]


class Study:
    def __init__(self, home: Path, name: str) -> None:
        self.home, self.name = home, name
        self.storage = f"sqlite:///{home / 'sweeps.db'}"
        self.client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")

    def optuna_trials(self) -> list[optuna.trial.FrozenTrial]:
        return optuna.load_study(study_name=self.name, storage=self.storage).trials

    def rows(self) -> list[dict[str, Any]]:
        with sqlite3.connect(self.home / "sweeps.db") as db:
            db.row_factory = sqlite3.Row
            cursor = db.execute(
                "SELECT t.* FROM sweeps_trials t JOIN sweeps_studies s ON s.id = t.study_id"
                " WHERE s.name = ? ORDER BY t.number",
                (self.name,),
            )
            return [dict(r) for r in cursor]

    def experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(self.name)
        assert experiment is not None
        return str(experiment.experiment_id)

    def runs(self, role: str) -> list[Any]:
        return list(
            self.client.search_runs(
                [self.experiment_id()], f"tags.`sweeps.role` = '{role}'", max_results=1000
            )
        )


def _raise_at(lam: float) -> Any:
    train = sweeps.training.train

    def faulty(cfg: TrialConfig, *args: Any, **kwargs: Any) -> TrialResult:
        if cfg.lambda_ == pytest.approx(lam):
            raise RuntimeError("injected fault: CUDA error: an illegal memory access")
        return train(cfg, *args, **kwargs)

    return faulty


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Study]:
    home = tmp_path_factory.mktemp("tracked")
    patch = pytest.MonkeyPatch()
    patch.setattr(sweeps.training, "train", _raise_at(FAILING_LAMBDA))
    try:
        result = CliRunner().invoke(
            cli, ["run", "--home", str(home), "--study", "tracked", *STUDY_ARGS]
        )
    finally:
        patch.undo()
    assert result.exit_code == 0, result.output
    yield Study(home, "tracked")


def test_one_child_run_per_trial_under_one_parent(study: Study) -> None:
    trials = study.optuna_trials()
    assert len(trials) == 4
    (parent,) = study.runs("parent")
    children = study.runs("trial")
    assert len(children) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted(int(r.data.tags["sweeps.trial_number"]) for r in children) == [0, 1, 2, 3]
    assert parent.info.status == "FINISHED"
    study_attrs = optuna.load_study(study_name="tracked", storage=study.storage).user_attrs
    assert study_attrs["mlflow_parent_run_id"] == parent.info.run_id


def test_statuses_follow_the_trials(study: Study) -> None:
    by_number = {int(r.data.tags["sweeps.trial_number"]): r for r in study.runs("trial")}
    expected = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
    states = [t.state.name for t in study.optuna_trials()]
    assert sorted(states) == ["COMPLETE", "COMPLETE", "FAIL", "PRUNED"]
    for trial in study.optuna_trials():
        run = by_number[trial.number]
        assert run.info.status == expected[trial.state.name]
        assert run.data.tags["sweeps.state"] == trial.state.name
    failed = next(r for r in by_number.values() if r.info.status == "FAILED")
    assert "injected fault" in failed.data.tags["sweeps.error"]
    pruned = next(r for r in by_number.values() if r.info.status == "KILLED")
    assert pruned.data.tags["sweeps.error"].startswith("diverged at epoch")


def test_complete_runs_have_the_full_history_and_loadable_artifacts(
    study: Study, tmp_path: Path
) -> None:
    complete = [r for r in study.runs("trial") if r.info.status == "FINISHED"]
    assert len(complete) == 2
    for run in complete:
        run_id = run.info.run_id
        for metric in METRICS:
            history = study.client.get_metric_history(run_id, metric)
            assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1)), metric
        assert run.data.params["penalty"] in {"none", "l2"}
        assert float(run.data.params["lambda"]) == pytest.approx(
            0.0 if run.data.params["penalty"] == "none" else 0.01
        )
        names = {a.path for a in study.client.list_artifacts(run_id)}
        assert {"config.json", "model_state_dict.pt"} <= names
        local = Path(study.client.download_artifacts(run_id, "", str(tmp_path / run_id)))
        config = json.loads((local / "config.json").read_text())
        assert config["epochs"] == EPOCHS and config["penalty"] == run.data.params["penalty"]
        weights = torch.load(local / "model_state_dict.pt", weights_only=True)
        norm = torch.cat([weights["weight"].flatten()]).norm().item()
        assert norm == pytest.approx(run.data.metrics["w_norm"], rel=1e-5)


def test_results_rows_match_optuna(study: Study) -> None:
    rows = {r["number"]: r for r in study.rows()}
    trials = study.optuna_trials()
    assert sorted(rows) == [t.number for t in trials]
    runs = {int(r.data.tags["sweeps.trial_number"]): r.info.run_id for r in study.runs("trial")}
    for trial in trials:
        row = rows[trial.number]
        assert row["state"] == trial.state.name
        assert row["mlflow_run_id"] == runs[trial.number]
        assert row["penalty"] == trial.params["penalty"]
        if trial.state.name == "COMPLETE":
            assert row["value"] == trial.value
        else:
            assert row["value"] is None and row["error"]


def test_parent_run_has_figure_table_and_optuna_plots(study: Study) -> None:
    (parent,) = study.runs("parent")
    names = {a.path for a in study.client.list_artifacts(parent.info.run_id)}
    assert "trials.csv" in names
    assert any(n.endswith(".png") and "lambda" in n for n in names), names
    assert any("history" in n for n in names), names


def test_best_json_equals_plain_sql(study: Study) -> None:
    env = cli_env(study.home)
    done = run_cli("best", "--study", "tracked", "--json", env=env)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    with sqlite3.connect(study.home / "sweeps.db") as db:
        # docs/tracking.md's portable "best λ per penalty" query, as a user would run it.
        query = DOC_PORTABLE.replace("'my-study'", "?")
        expected = [(r[0], r[1], r[3], r[6]) for r in db.execute(query, ("tracked",))]
    got = [(a["penalty"], a["lambda"], a["value"], a["trial_number"]) for a in answer]
    assert got == expected and len(got) == 2
    assert {"study", "train_loss", "test_loss", "w_norm", "mlflow_run_id"} <= set(answer[0])
    one = run_cli("best", "--study", "tracked", "--penalty", "l2", "--json", env=env)
    assert [a["penalty"] for a in json.loads(one.stdout)] == ["l2"]


@pytest.mark.slow
def test_check_finds_and_repairs_what_a_crash_leaves(study: Study) -> None:
    env = cli_env(study.home)
    assert run_cli("check", "--study", "tracked", env=env).returncode == 0
    # What a crash between the MLflow write and the results row leaves: a lost row and a
    # child run still RUNNING.
    victim = next(r for r in study.runs("trial") if r.info.status == "FINISHED")
    number = int(victim.data.tags["sweeps.trial_number"])
    with sqlite3.connect(study.home / "sweeps.db") as db:
        db.execute("DELETE FROM sweeps_trials WHERE number = ?", (number,))  # one study here
    study.client.update_run(victim.info.run_id, status="RUNNING")

    broken = run_cli("check", "--study", "tracked", env=env)
    assert broken.returncode == 1
    assert f"trial {number}: no results row" in broken.stdout
    assert "RUNNING" in broken.stdout

    repaired = run_cli("check", "--study", "tracked", "--repair", env=env)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert run_cli("check", "--study", "tracked", env=env).returncode == 0
    assert study.client.get_run(victim.info.run_id).info.status == "FINISHED"
    assert number in {r["number"] for r in study.rows()}
    assert len(study.runs("trial")) == 4  # repaired in place, no second run


@pytest.mark.slow
def test_hostile_study_name_end_to_end(tmp_path: Path) -> None:
    home = tmp_path / "home"
    name = 'it\'s a "study"; DROP TABLE sweeps_trials; -- ../../escape'
    env = cli_env(home)
    args = ["--penalties", "l2", "--epochs", "3", "--trials", "2", "--quiet"]
    done = run_cli("run", "--study", name, *args, env=env)
    assert done.returncode == 0, done.stderr
    assert set(p.name for p in tmp_path.iterdir()) == {"home"}  # nothing written beside it
    best = run_cli("best", "--study", name, "--json", env=env)
    assert best.returncode == 0, best.stderr
    assert json.loads(best.stdout)[0]["study"] == name
    assert run_cli("check", "--study", name, env=env).returncode == 0
    assert not list(home.rglob("escape*"))


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "run"])
def test_unreachable_server_fails_fast_with_the_password_masked(
    tmp_path: Path, command: str
) -> None:
    """Refused before any work: one line, URI masked, no study half created."""
    uri = "http://admin:hunter2@127.0.0.1:9/"
    args = ["--penalty" if command == "train" else "--penalties", "l2", "--epochs", "2"]
    if command == "run":
        args += ["--study", "never", "--trials", "1"]
    env = cli_env(tmp_path / "h")
    done = run_cli(command, *args, "--tracking-uri", uri, env=env)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "sweeps: error: MLflow server http://admin:***@127.0.0.1:9/ is unreachable"
        " (Connection error)"
    )
    assert "hunter2" not in done.stdout
    assert not (tmp_path / "h").exists()  # refused before the home, let alone a study

"""An identical configuration is not trained again: with the study's seeds it would give
the identical result, so the trial takes the earlier one's, marked in Optuna, MLflow and
the results table, and counted in the run's summary."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.sweeps.study_helpers import cli_env, run_cli

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("batch", "trials", "trained"), [(1, 3, 1), (2, 4, 2)])
def test_a_repeated_configuration_takes_the_earlier_result(
    tmp_path: Path, batch: int, trials: int, trained: int
) -> None:
    """`none` has no parameter besides itself: every trial after the first round repeats
    a finished one (a round's own duplicates train together, in one stack). Repeats do
    not count toward --trials, up to --trials of them: the study ends with the trials
    it trained, plus --trials repeats free, plus repeats that counted to reach --trials."""
    home = tmp_path / "home"
    args = ["run", "--study", "re", "--penalties", "none", "--epochs", "3", "--quiet"]
    done = run_cli(*args, "--trials", str(trials), "--batch", str(batch), env=cli_env(home))
    assert done.returncode == 0, done.stderr
    reused = 2 * trials - trained
    assert f"{reused} trial(s) repeated an earlier trial's configuration" in done.stdout
    rows = json.loads(run_cli("trials", "--study", "re", "--json", env=cli_env(home)).stdout)
    sources = [r for r in rows if r["reused_from"] is None]
    copies = [r for r in rows if r["reused_from"] is not None]
    assert len(sources) == trained and len(copies) == reused
    source = {r["number"]: r for r in sources}
    for row in copies:
        earlier = source[row["reused_from"]]
        for column in ("value", "train_loss", "test_loss", "w_norm", "state"):
            assert row[column] == earlier[column], column
        assert row["duration_s"] == 0.0
    study = optuna.load_study(study_name="re", storage=f"sqlite:///{home / 'sweeps.db'}")
    marked = {t.number: t.user_attrs.get("sweeps.reused_from") for t in study.trials}
    assert marked == {r["number"]: r["reused_from"] for r in rows}
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    for row in copies:
        tags = client.get_run(row["mlflow_run_id"]).data.tags
        assert tags["sweeps.reused_from"] == str(row["reused_from"])
    check = run_cli("check", "--study", "re", env=cli_env(home))
    assert check.returncode == 0, check.stdout


def test_repeated_proposals_leave_the_budget_to_trials_that_train(tmp_path: Path) -> None:
    """The random sampler proposes `none` about half the time: each repeat of it takes
    the first one's result and counts toward --trials only past --trials repeats."""
    home = tmp_path / "home"
    args = ["run", "--study", "budget", "--penalties", "none,l2", "--epochs", "3"]
    args += ["--sampler", "random", "--trials", "8", "--no-track", "--quiet"]
    done = run_cli(*args, env=cli_env(home))
    assert done.returncode == 0, done.stderr
    rows = json.loads(run_cli("trials", "--study", "budget", "--json", env=cli_env(home)).stdout)
    copies = [r for r in rows if r["reused_from"] is not None]
    assert copies, "the sampler repeated no configuration"
    assert len(rows) == 8 + min(len(copies), 8)
    assert f"{len(copies)} trial(s) repeated an earlier trial's configuration" in done.stdout

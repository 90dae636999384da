"""What `sweeps run` tells a user at the end, and what the query commands say about trials
that did not complete."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.sweeps.cli_helpers import assert_usage_error, invoke, invoke_json
from tests.sweeps.study_helpers import cli_env, run_cli

# λ ≥ 1e4 with the d2l learning rate diverges at once: every l2 trial ends PRUNED
DIVERGING = ["--penalties", "l2", "--lambda-min", "1e4", "--lambda-max", "1e5"]


@pytest.mark.slow
def test_a_run_ends_with_its_stores_and_the_commands_that_read_them(tmp_path: Path) -> None:
    home = tmp_path / "home"
    args = ["run", "--study", "sum", "--trials", "2", "--epochs", "3", "--penalties", "l2"]
    done = run_cli(*args, "--quiet", env=cli_env(home))
    assert done.returncode == 0, done.stderr
    tail = done.stdout.strip().splitlines()[-3:]
    assert tail[0].startswith(f"stores:  sqlite:///{home / 'sweeps.db'} (Optuna, results);")
    assert f"sqlite:///{home / 'mlflow.db'} (MLflow experiment" in tail[0]
    assert tail[1] == f"query:   sweeps best --study sum --home {home}"
    assert tail[2] == f"open:    sweeps ui --home {home} --study sum"
    again = run_cli(*args, "--quiet", "--json", env=cli_env(home))
    doc = json.loads(again.stdout)
    parent = MlflowClient(f"sqlite:///{home / 'mlflow.db'}").get_run(doc["mlflow_parent_run_id"])
    assert parent.info.experiment_id == doc["mlflow_experiment_id"]
    assert parent.data.tags["sweeps.role"] == "parent" and parent.info.run_id in tail[0]


def test_best_without_a_complete_trial_says_why_and_json_stays_json(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    run = ["--study", "div", "--trials", "2", "--epochs", "3", "--no-track", "--home", home]
    invoke_json("run", *run, *DIVERGING, "--quiet")
    plain = invoke("best", "--study", "div", "--penalty", "l2", "--home", home)
    assert_usage_error(plain, "no complete trial for penalty 'l2' (2 pruned)")
    as_json = invoke("best", "--study", "div", "--penalty", "l2", "--json", "--home", home)
    assert as_json.exit_code == 2 and json.loads(as_json.stdout) == []
    trials = invoke_json("trials", "--study", "div", "--home", home)
    assert all(
        t["state"] == "PRUNED" and t["error"].startswith("diverged at epoch") for t in trials
    )
    table = invoke("trials", "--study", "div", "--home", home).stdout.splitlines()
    assert table[0].split()[-2:] == ["mlflow_run_id", "error"]
    assert re.search(r"  diverged at epoch \d+$", table[1])


def test_a_timeout_that_runs_out_before_the_first_trial_says_no_trials(tmp_path: Path) -> None:
    """A --timeout shorter than it takes to start a trial starts none (as Optuna's own
    `optimize(timeout=...)` does); the summary says so rather than leaving a blank."""
    home = str(tmp_path / "home")
    run = ["run", "--study", "t", "--timeout", "1e-300", "--no-track", "--home", home]
    ran = invoke(*run)
    assert ran.exit_code == 0, ran.stderr
    assert ran.stdout.splitlines()[0] == "study t: no trials yet"
    joined = invoke("worker", "--study", "t", "--timeout", "1e-300", "--no-track", "--home", home)
    assert joined.exit_code == 0, joined.stderr
    assert joined.stdout.strip() == "no trials yet"
    assert invoke_json("run", *run[1:])["states"] == {}


def test_every_penalty_is_listed_with_its_counts_also_without_a_complete_trial(
    tmp_path: Path,
) -> None:
    home = str(tmp_path / "home")
    # `none` completes; every l2 trial diverges (PRUNED): l2 has no best, only counts.
    space = ["--penalties", "none,l2", "--lambda-min", "1e4", "--lambda-max", "1e5"]
    run = ["--study", "all", "--trials", "6", "--epochs", "3", "--no-track", "--home", home]
    summary = invoke_json("run", *run, *space, "--sampler", "random", "--quiet")
    trials = invoke_json("trials", "--study", "all", "--home", home)
    l2 = [t for t in trials if t["penalty"] == "l2"]
    assert l2 and all(t["state"] == "PRUNED" for t in l2)
    reused = sum(t["reused_from"] is not None for t in trials)
    for rows in (
        summary["best"],
        invoke_json("best", "--study", "all", "--home", home),
        invoke_json("compare", "--home", home),
    ):
        by_penalty = {row["penalty"]: row for row in rows}
        assert list(by_penalty) == ["none", "l2"]  # the one with a best first
        assert by_penalty["l2"]["value"] is None and by_penalty["l2"]["lambda"] is None
        counts = {
            p: [r[c] for c in ("complete", "pruned", "failed", "reused")]
            for p, r in by_penalty.items()
        }
        assert counts == {"none": [1, 0, 0, reused], "l2": [0, len(l2), 0, 0]}
    table = invoke("best", "--study", "all", "--home", home).stdout.splitlines()
    assert table[0].split()[-4:] == ["complete", "pruned", "failed", "reused"]
    assert table[2].split()[:2] == ["all", "l2"] and table[2].split()[-4:] == [
        "0",
        str(len(l2)),
        "0",
        "0",
    ]
    compared = invoke("compare", "--home", home).stdout.splitlines()
    assert compared[2].split()[:2] == ["all", "l2"]
    printed = invoke("run", *run, *space, "--sampler", "random", "--quiet").stdout
    assert re.search(r"^l2 +- .* 0 +\d+ +0 +0$", printed, re.MULTILINE)

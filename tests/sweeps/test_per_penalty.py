"""`--per-penalty N`: a stratified search, every penalty exactly N trials, in one process,
in rounds, under the public storage path and across worker processes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.sweeps.cli_helpers import assert_usage_error, invoke, invoke_json
from tests.sweeps.study_helpers import cli_env, load, run_cli

SPACE = ["--penalties", "none,l1,l2", "--epochs", "3", "--no-track", "--quiet"]


def _per_penalty(trials: list[dict[str, object]]) -> Counter[object]:
    return Counter(t["penalty"] for t in trials)


@pytest.mark.parametrize("batch", ["1", "3", "5"])
def test_every_penalty_gets_exactly_its_trials(tmp_path: Path, batch: str) -> None:
    home = str(tmp_path / "home")
    run = ["run", "--study", "strat", "--home", home, *SPACE, "--batch", batch]
    summary = invoke_json(*run, "--per-penalty", "4")
    assert summary["requested"] == 12
    trials = invoke_json("trials", "--study", "strat", "--home", home)
    assert _per_penalty(trials) == {"none": 4, "l1": 4, "l2": 4}
    # Past the sampler's startup, λ still comes from within each penalty, and a resumed
    # study gives each penalty its next N.
    invoke_json(*run, "--per-penalty", "5")
    trials = invoke_json("trials", "--study", "strat", "--home", home)
    assert _per_penalty(trials) == {"none": 9, "l1": 9, "l2": 9}
    assert all(t["lambda"] and t["lambda"] >= 1e-5 for t in trials if t["penalty"] != "none")


def test_rounds_mix_the_penalties(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    run = ["run", "--study", "mix", "--home", home, *SPACE, "--batch", "3"]
    invoke_json(*run, "--per-penalty", "2", "--sampler", "random")
    trials = invoke_json("trials", "--study", "mix", "--home", home)
    assert [t["penalty"] for t in trials] == ["none", "l1", "l2"] * 2


def test_the_public_storage_path_balances_too(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    env = {"SWEEPS_OPTUNA_PUBLIC": "1"}
    run = ["run", "--study", "pub", "--home", home, *SPACE, "--batch", "2", "--per-penalty", "3"]
    assert invoke(*run, "--json", env=env).exit_code == 0
    trials = invoke_json("trials", "--study", "pub", "--home", home)
    assert _per_penalty(trials) == {"none": 3, "l1": 3, "l2": 3}


@pytest.mark.slow
def test_workers_share_the_counts_per_penalty(tmp_path: Path, storage_url: str) -> None:
    env = cli_env(tmp_path / "h", storage_url)
    args = ["run", "--study", "wk", *SPACE, "--workers", "2", "--batch", "3"]
    done = run_cli(*args, "--per-penalty", "4", env=env)
    assert done.returncode == 0, done.stderr
    trials = load("wk", storage_url).trials
    assert len(trials) == 12
    assert Counter(t.params["penalty"] for t in trials) == {"none": 4, "l1": 4, "l2": 4}


def test_per_penalty_refuses_what_it_cannot_keep(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run = ["run", "--study", "bad", "--home", str(home), *SPACE]
    conflict = invoke(*run, "--per-penalty", "4", "--trials", "10")
    assert_usage_error(conflict, "--trials 10 conflicts with --per-penalty 4", "= 12 trials")
    assert_usage_error(invoke(*run, "--per-penalty", "4", "--sampler", "grid"), "--sampler")
    assert_usage_error(invoke(*run, "--per-penalty", "0"), "--per-penalty must be in [1,")
    assert not home.exists()
    # The same number of trials given both ways is no conflict.
    assert invoke(*run, "--per-penalty", "1", "--trials", "3", "--json").exit_code == 0


def test_a_toml_file_gives_per_penalty_and_the_study_keeps_it(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    config = tmp_path / "sweep.toml"
    config.write_text('per-penalty = 2\npenalties = ["l1", "l2"]\nepochs = 3\n')
    invoke_json("run", "--study", "toml", "--config", str(config), "--home", home, "--no-track")
    trials = invoke_json("trials", "--study", "toml", "--home", home)
    assert _per_penalty(trials) == {"l1": 2, "l2": 2}
    invoke("worker", "--study", "toml", "--trials", "2", "--home", home, "--no-track", "--quiet")
    trials = invoke_json("trials", "--study", "toml", "--home", home)
    assert _per_penalty(trials) == {"l1": 3, "l2": 3}

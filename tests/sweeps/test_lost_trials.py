"""A worker killed before its trial's first heartbeat: the trial must not stay RUNNING.

The kill cannot be timed into that window (milliseconds), so the state it leaves is made
directly: a trial created through Optuna's real storage and never beaten for.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
import torch
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from sweeps._optuna import FORCE_PUBLIC_ENV, trial_id
from sweeps.config import SweepConfig
from sweeps.lifecycle import RoundOptimizer
from sweeps.pruning import PruningView
from sweeps.storage import lost_trials, open_storage
from sweeps.study import create_or_load
from tests.sweeps.cli_helpers import assert_usage_error, invoke
from tests.sweeps.study_helpers import Unrecorded, cli_env, load, run_cli, wait_until_lost
from tracking.results import ResultsStore
from trainer import Penalty, load_task

HEARTBEAT_S = "1"  # grace period: 2 s


def _abandoned_trial(study: str, storage: str) -> optuna.trial.FrozenTrial:
    """What a worker killed right after `ask` leaves: RUNNING, params, no heartbeat."""
    loaded = optuna.load_study(study_name=study, storage=open_storage(storage))
    trial = loaded.ask()
    trial.suggest_categorical("penalty", ["l2"])
    trial.suggest_float("lambda", 1e-5, 100, log=True)
    return loaded.trials[trial.number]


def _check(*args: str, env: dict[str, str]) -> tuple[int, dict[str, object]]:
    done = run_cli("check", "--study", "lost", "--json", *args, env=env)
    return done.returncode, json.loads(done.stdout)


@pytest.mark.slow
def test_check_repairs_a_trial_lost_before_its_first_heartbeat(tmp_path: Path) -> None:
    home = tmp_path / "h"
    storage = f"sqlite:///{home / 'sweeps.db'}"
    env = cli_env(home, SWEEPS_HEARTBEAT_S=HEARTBEAT_S)
    args = ("--study", "lost", "--penalties", "l2", "--epochs", "5", "--quiet")
    assert run_cli("run", *args, "--trials", "1", env=env).returncode == 0
    lost = _abandoned_trial("lost", storage)

    # Young for a checker whose grace period is 2 minutes: its worker may be about to beat.
    code, report = _check(env=cli_env(home, SWEEPS_HEARTBEAT_S="60"))
    assert code == 0, report
    wait_until_lost(storage, "lost", heartbeat_s=HEARTBEAT_S)  # past the grace period of `env`
    code, report = _check(env=env)
    assert code == 1 and report["problems"] == [
        f"trial {lost.number}: RUNNING, but its worker is lost (no heartbeat)"
    ]
    assert load("lost", storage).trials[lost.number].state is TrialState.RUNNING  # read-only

    code, report = _check("--repair", env=env)
    assert code == 0 and report["consistent"], report
    trials = load("lost", storage).trials
    assert trials[lost.number].state is TrialState.FAIL
    [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == lost.number]
    assert retry.state is TrialState.WAITING and retry.params == lost.params
    rows = {
        r["number"]: r
        for r in json.loads(run_cli("trials", "--study", "lost", "--json", env=env).stdout)
    }
    assert rows[lost.number]["state"] == "FAIL"
    run = MlflowClient(f"sqlite:///{home / 'mlflow.db'}").get_run(
        rows[lost.number]["mlflow_run_id"]
    )
    assert run.info.status == "FAILED"

    # The next worker runs the retry with the lost trial's parameters; all agree again.
    assert run_cli("worker", "--study", "lost", "--trials", "1", "--quiet", env=env).returncode == 0
    assert load("lost", storage).trials[retry.number].state is TrialState.COMPLETE
    code, report = _check(env=env)
    assert code == 0 and report["problems"] == [], report


@pytest.mark.slow
def test_a_worker_starting_fails_and_retries_a_lost_trial(tmp_path: Path) -> None:
    """No human needed: the next worker adopts the lost trial as Optuna does stale ones."""
    home = tmp_path / "h"
    storage = f"sqlite:///{home / 'sweeps.db'}"
    env = cli_env(home, SWEEPS_HEARTBEAT_S=HEARTBEAT_S)
    args = ("--study", "lost", "--penalties", "l2", "--epochs", "5", "--quiet", "--no-track")
    assert run_cli("run", *args, "--trials", "1", env=env).returncode == 0
    lost = _abandoned_trial("lost", storage)
    wait_until_lost(storage, "lost", heartbeat_s=HEARTBEAT_S)
    worker = run_cli("worker", "--study", "lost", "--trials", "1", "--no-track", env=env)
    assert worker.returncode == 0, worker.stderr
    trials = load("lost", storage).trials
    assert trials[lost.number].state is TrialState.FAIL
    [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == lost.number]
    assert retry.state is TrialState.COMPLETE and retry.params == lost.params
    results = ResultsStore(storage)
    [row] = [r for r in results.trials("lost") if r["number"] == lost.number]
    results.dispose()
    assert (row["state"], row["error"]) == ("FAIL", "worker lost: heartbeat stale")


def test_a_long_ask_round_beats_for_the_trials_asked_so_far(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--batch K` asks K trials before training them; a slow ask must not make the first
    ones look lost to another worker (a heartbeat every half interval while asking). With
    Optuna's public API, that is: a planned round is created in one transaction."""
    monkeypatch.setenv("SWEEPS_HEARTBEAT_S", HEARTBEAT_S)
    monkeypatch.setenv(FORCE_PUBLIC_ENV, "1")
    storage = open_storage(f"sqlite:///{tmp_path / 'sweeps.db'}")
    cfg = SweepConfig(study="asks", penalties=(Penalty.L2,), trials=4, batch=4)
    study = create_or_load(cfg, storage)
    batched = RoundOptimizer(
        study, cfg, load_task(cfg.base), torch.device("cpu"), "cpu", Unrecorded()
    )
    ask = batched._asker._ask_one

    def slow_ask(*args: Any) -> Any:
        time.sleep(0.3)  # what is tested: an ask that takes time (a sampler over a long history)
        return ask(*args)

    monkeypatch.setattr(batched._asker, "_ask_one", slow_ask)
    slots, beaten_at_ask = batched._ask_round(4, PruningView(study))
    assert not beaten_at_ask  # asked one by one: the round beats from the start
    with storage.engine.connect() as conn:
        beaten = set(conn.execute(sa.text("SELECT trial_id FROM trial_heartbeats")).scalars())
    ids = [trial_id(slot.trial) for slot in slots]
    assert ids[0] in beaten and len(beaten & set(ids)) >= 2  # asked > 0.5 s before the end
    monkeypatch.delenv(FORCE_PUBLIC_ENV)  # lost trials are found in Optuna's tables only
    assert lost_trials(study, storage) == []


@pytest.mark.parametrize("beat_s", ["86401", str(2**40), "99999999999999999999"])
def test_a_heartbeat_longer_than_a_day_is_one_line(tmp_path: Path, beat_s: str) -> None:
    args = ["run", "--study", "b", "--trials", "1", "--epochs", "2", "--no-track"]
    result = invoke(*args, "--home", str(tmp_path / "h"), env={"SWEEPS_HEARTBEAT_S": beat_s})
    assert_usage_error(result, "SWEEPS_HEARTBEAT_S must be 1 to 86400 seconds", beat_s)

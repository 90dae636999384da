"""`sweeps run --batch K` records exactly what the sequential objective records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.sweeps.study_helpers import cli_env, load, run_cli

pytestmark = pytest.mark.slow

# none + three penalties on the λ grid {1e-2, 1, 1e2, 1e4}: λ=1e4 diverges for l2 and
# weight_decay (lr·λ = 30), so a batch holds complete and diverging members.
GRID = [
    "--penalties",
    "none,l2,weight_decay,l1",
    "--sampler",
    "grid",
    "--grid-points",
    "4",
    "--lambda-min",
    "1e-2",
    "--lambda-max",
    "1e4",
    "--epochs",
    "20",
    "--pruner",
    "none",
    "--quiet",
    "--json",
]


def _run(home: Path, *args: str) -> dict[str, Any]:
    done = run_cli("run", "--study", "s", *args, env=cli_env(home))
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def _trials(home: Path) -> dict[tuple[str, float], dict[str, Any]]:
    done = run_cli("trials", "--study", "s", "--json", env=cli_env(home))
    assert done.returncode == 0, done.stderr
    return {(t["penalty"], t["lambda"] or 0.0): t for t in json.loads(done.stdout)}


def _runs(home: Path) -> dict[int, Any]:
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("s")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.`sweeps.role` = 'trial'")
    return {int(r.data.tags["sweeps.trial_number"]): r for r in runs}


def test_batched_study_records_what_sequential_does(tmp_path: Path) -> None:
    sequential, batched = tmp_path / "seq", tmp_path / "batch"
    _run(sequential, *GRID, "--trials", "13")
    doc = _run(batched, *GRID, "--trials", "13", "--batch", "5")  # rounds of 5, 5, 3
    assert doc["states"] == {"COMPLETE": 11, "PRUNED": 2}

    seq, bat = _trials(sequential), _trials(batched)
    assert seq.keys() == bat.keys() and len(seq) == 13  # the whole grid, once each
    for key, want in seq.items():
        got = bat[key]
        assert got["state"] == want["state"], key
        for metric in ("value", "train_loss", "val_loss", "test_loss", "w_norm"):
            if want[metric] is None:
                assert got[metric] is None
            else:
                assert got[metric] == pytest.approx(want[metric], rel=1e-5, abs=1e-7), metric

    seq_runs, bat_runs = _runs(sequential), _runs(batched)
    assert len(bat_runs) == 13
    by_number = {t["number"]: t for t in bat.values()}
    for number, run in bat_runs.items():
        trial = by_number[number]
        assert run.data.tags["sweeps.state"] == trial["state"]
        assert run.info.run_id == trial["mlflow_run_id"]
    # The same tags, params and metric names as a sequential run of the same trial.
    seq_by_key = {
        (r.data.params["penalty"], float(r.data.params["lambda"])): r for r in seq_runs.values()
    }
    for run in bat_runs.values():
        twin = seq_by_key[(run.data.params["penalty"], float(run.data.params["lambda"]))]
        assert run.data.params == twin.data.params | {"device": run.data.params["device"]}
        assert set(run.data.tags) == set(twin.data.tags)
        assert run.data.metrics.keys() == twin.data.metrics.keys()
        assert run.info.status == twin.info.status

    assert run_cli("check", "--study", "s", env=cli_env(batched)).returncode == 0


def test_repeats_and_pruning_in_batches(tmp_path: Path) -> None:
    home = tmp_path / "h"
    args = ["--trials", "12", "--batch", "6", "--repeats", "2", "--epochs", "30", "--quiet"]
    args += ["--history", "epochs"]  # every epoch a metric row: the curve's length is checked
    doc = _run(home, "--penalties", "none,l2,l1", "--pruner", "median", *args, "--json")
    assert sum(doc["states"].values()) == 12
    study = load("s", f"sqlite:///{home / 'sweeps.db'}")
    runs = _runs(home)
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    for trial in study.trials:
        run = runs[trial.number]
        steps = len(client.get_metric_history(run.info.run_id, "val_loss"))
        record = trial.user_attrs["sweeps.record"]
        if trial.state.name == "COMPLETE":
            assert steps == 30
            # the objective is the mean over both seeds, as in sequential mode
            assert trial.value == pytest.approx(record["final"]["val_loss"])
        elif record["error"].startswith("pruned at epoch"):
            pruned_at = int(record["error"].rsplit(" ", 1)[1])
            assert steps == pruned_at and max(trial.intermediate_values) == pruned_at
    assert run_cli("check", "--study", "s", env=cli_env(home)).returncode == 0


def test_bad_batch_is_refused(tmp_path: Path) -> None:
    done = run_cli("run", "--study", "x", "--batch", "0", env=cli_env(tmp_path / "h"))
    assert done.returncode == 2
    assert done.stderr.strip() == "sweeps: error: --batch must be in [1, 1000000], got 0"
    assert not (tmp_path / "h").exists()


def test_a_failing_round_fails_its_trials_and_the_study_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training raising inside a round (the one fault no flag causes, so it is injected)."""
    import optuna
    from click.testing import CliRunner

    import sweeps.training
    from sweeps.cli import cli

    real = sweeps.training.train_batch
    calls = []

    def first_round_fails(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected: CUDA out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(sweeps.training, "train_batch", first_round_fails)
    home = tmp_path / "h"
    args = ["run", "--home", str(home), "--study", "f", "--penalties", "l2", "--epochs", "5"]
    result = CliRunner().invoke(cli, [*args, "--trials", "6", "--batch", "3", "--no-track"])
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name="f", storage=f"sqlite:///{home / 'sweeps.db'}").trials
    states = [t.state.name for t in sorted(trials, key=lambda t: t.number)]
    assert states == ["FAIL"] * 3 + ["COMPLETE"] * 3
    errors = {t.user_attrs["sweeps.record"]["error"] for t in trials if t.state.name == "FAIL"}
    assert errors == {"RuntimeError: injected: CUDA out of memory"}


@pytest.mark.parametrize("batch", ["1", "2"])
def test_rounds_failing_alike_stop_the_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: str
) -> None:
    """A fault that fails every round (a bug, a device gone) stops the study after
    SAME_FAILURES rounds, its trials recorded FAIL, instead of failing every trial."""
    import optuna
    from click.testing import CliRunner

    import sweeps.lifecycle
    import sweeps.training
    from sweeps.cli import cli

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected: device lost")

    monkeypatch.setattr(sweeps.training, "train_batch", broken)
    monkeypatch.setattr(sweeps.training, "train", broken)
    home = tmp_path / "h"
    args = ["run", "--home", str(home), "--study", "s", "--penalties", "l2", "--epochs", "3"]
    result = CliRunner().invoke(
        cli, [*args, "--trials", "20", "--batch", batch, "--no-track", "--quiet"]
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "sweeps: error: stopped: 3 rounds in a row failed with RuntimeError: injected: device lost"
    ]
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{home / 'sweeps.db'}").trials
    assert len(trials) == sweeps.lifecycle.SAME_FAILURES * int(batch)
    assert {t.state.name for t in trials} == {"FAIL"}

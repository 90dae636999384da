"""`sweeps confirm`: known answers on the d2l task, equality with `sweeps train`, resumes
that train only what is missing, a SIGKILL mid-confirm healed by a plain rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.sweeps.cli_helpers import assert_usage_error, invoke, invoke_json
from tests.sweeps.study_helpers import cli_env, run_cli


def _study(home: Path, name: str, *flags: str, track: bool = False) -> None:
    args = ["run", "--study", name, "--home", str(home), "--quiet", *flags]
    result = invoke(*args, *([] if track else ["--no-track"]))
    assert result.exit_code == 0, result.stderr


def _confirm(home: Path, name: str, *flags: str) -> dict:  # type: ignore[type-arg]
    doc: dict = invoke_json(  # type: ignore[type-arg]
        "confirm", "--study", name, "--home", str(home), "--no-track", *flags
    )
    return doc


@pytest.mark.slow
def test_d2l_none_is_worse_than_l2_on_every_fresh_seed(tmp_path: Path) -> None:
    _study(tmp_path, "d2l", "--penalties", "none,l2", "--trials", "8", "--lambda-min", "1")
    doc = _confirm(tmp_path, "d2l", "--seeds", "10")
    assert doc["seeds"] == list(range(1, 11)) and doc["fixed_data"] is False
    by_penalty = {c["penalty"]: c for c in doc["candidates"]}
    assert doc["best"] == by_penalty["l2"]["trial_number"]
    (none,) = doc["comparisons"]
    assert none["penalty"] == "none" and none["wins"] == 0
    assert none["diff_ci_low"] > 0 and none["p_holm"] <= 0.01 and not none["identical"]
    for c in doc["candidates"]:
        assert len(c["values"]) == 10 and c["ci_low"] <= c["mean"] <= c["ci_high"]
    assert doc["friedman_p"] is None  # two candidates


def test_l2_and_weight_decay_at_one_lambda_under_sgd_are_identical(tmp_path: Path) -> None:
    _study(
        tmp_path,
        "same",
        "--penalties",
        "l2,weight_decay",
        "--sampler",
        "grid",
        "--grid-points",
        "2",
        "--trials",
        "4",
        "--pruner",
        "none",
    )
    rows = invoke_json("trials", "--study", "same", "--home", str(tmp_path))
    lam = rows[0]["lambda"]
    pair = [r["number"] for r in rows if r["lambda"] == lam]
    assert sorted(r["penalty"] for r in rows if r["lambda"] == lam) == ["l2", "weight_decay"]
    doc = _confirm(tmp_path, "same", "--seeds", "6", *(f"--trial={n}" for n in pair))
    a, b = doc["candidates"]
    assert a["values"] == b["values"]
    (cmp,) = doc["comparisons"]
    assert cmp["identical"] is True and cmp["diff_mean"] == 0.0 and cmp["p_value"] == 1.0
    text = invoke(
        "confirm",
        "--study",
        "same",
        "--home",
        str(tmp_path),
        "--no-track",
        "--seeds",
        "6",
        *(f"--trial={n}" for n in pair),
    ).stdout
    assert "identical on every seed" in text and "trained 0 run(s)" in text


def test_each_confirmation_equals_sweeps_train_of_its_config_and_seed(tmp_path: Path) -> None:
    _study(tmp_path, "eq", "--penalties", "l2", "--trials", "2", "--epochs", "20")
    doc = _confirm(tmp_path, "eq", "--seeds", "2")
    (cand,) = doc["candidates"]
    for seed, value in zip(doc["seeds"], cand["values"], strict=True):
        alone = invoke_json(
            "train",
            "--penalty",
            "l2",
            "--lambda",
            repr(cand["lambda"]),
            "--epochs",
            "20",
            "--seed",
            str(seed),
            "--no-track",
            "--home",
            str(tmp_path),
        )
        assert alone["test_loss"] == value  # bit-equal: nn.Linear on CPU


def test_a_digits_confirmation_draws_a_new_split_per_seed(tmp_path: Path) -> None:
    """Fresh data on a table task: seed s trains on split s, as `sweeps train --split-seed
    s` does, not on the study's fixed split (which `sweeps train --seed s` uses)."""
    training = ("--task", "digits", "--epochs", "2", "--batch-size", "100")
    _study(tmp_path, "dg", *training, "--penalties", "l2", "--trials", "2")
    doc = _confirm(tmp_path, "dg", "--seeds", "2")
    (cand,) = doc["candidates"]
    assert doc["fixed_data"] is False and cand["values"][0] != cand["values"][1]
    for seed, value in zip(doc["seeds"], cand["values"], strict=True):
        args = ("train", *training, "--penalty", "l2", "--lambda", repr(cand["lambda"]))
        args += ("--seed", str(seed), "--no-track", "--home", str(tmp_path))
        own = invoke_json(*args, "--split-seed", str(seed))
        fixed = invoke_json(*args)
        # one split's value to float tolerance (a 10-output layer stacked sums in its own
        # order); the fixed split's is another number
        assert own["test_loss"] == pytest.approx(value, rel=1e-5)
        assert fixed["test_loss"] != pytest.approx(value, rel=1e-3)


def test_more_seeds_train_only_the_new_pairs_and_few_seeds_give_no_p_values(
    tmp_path: Path,
) -> None:
    _study(tmp_path, "more", "--penalties", "none,l2", "--trials", "6", "--epochs", "10")
    first = invoke(
        "confirm", "--study", "more", "--home", str(tmp_path), "--no-track", "--seeds", "3"
    )
    assert "trained 6 run(s)" in first.stdout and "no p-values with 3 seeds" in first.stdout
    doc = _confirm(tmp_path, "more", "--seeds", "6")
    assert doc["seeds"] == list(range(1, 7))
    again = invoke(
        "confirm", "--study", "more", "--home", str(tmp_path), "--no-track", "--seeds", "6"
    )
    assert "trained 0 run(s)" in again.stdout
    assert all(c["p_value"] is not None for c in doc["comparisons"])


def test_confirm_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    assert_usage_error(
        invoke("confirm", "--study", "nope", "--home", str(tmp_path), "--no-track"),
        "no sweeps storage",
    )
    assert not (tmp_path / "sweeps.db").exists()
    _study(tmp_path, "bad", "--penalties", "l2", "--trials", "1", "--epochs", "2")
    home = ("--home", str(tmp_path), "--no-track")
    assert_usage_error(invoke("confirm", "--study", "nope", *home), "no study named")
    assert_usage_error(invoke("confirm", "--study", "bad", "--trial", "7", *home), "trial 7")
    assert_usage_error(invoke("confirm", "--study", "bad", "--seeds", "0", *home), "--seeds")


@pytest.mark.slow
def test_sigkill_mid_confirm_heals_on_a_plain_rerun(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    done = run_cli(
        "run",
        "--study",
        "k",
        "--penalties",
        "none,l2",
        "--trials",
        "4",
        "--epochs",
        "4",
        "--quiet",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    kill = {**env, "SWEEPS_KILL_AT": "confirm_logged:2"}  # the second of three stacks
    killed = run_cli("confirm", "--study", "k", "--seeds", "3", "--batch", "2", env=kill)
    assert killed.returncode == -9, killed.stderr
    done = run_cli("confirm", "--study", "k", "--seeds", "3", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(run_cli("check", "--study", "k", "--json", env=env).stdout)
    assert report["consistent"] and not report["problems"], report
    assert report["confirmation_rows"] == report["confirmation_runs"] == 6, report
    assert report["mlflow_runs"] == report["optuna_finished"], report


def test_check_repair_recreates_a_deleted_confirmation_run_from_its_row(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    _study(tmp_path, "rp", "--penalties", "l2", "--trials", "2", "--epochs", "5", track=True)
    done = invoke("confirm", "--study", "rp", "--home", str(tmp_path), "--seeds", "2", "--json")
    assert done.exit_code == 0, done.stderr
    row = json.loads(done.stdout)["candidates"][0]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("rp")
    assert experiment is not None
    where = "tags.`sweeps.role` = 'confirmation' and tags.`sweeps.seed` = '2'"
    (gone,) = client.search_runs([experiment.experiment_id], where)
    client.delete_run(gone.info.run_id)

    def check(*flags: str) -> dict:  # type: ignore[type-arg]
        result = invoke("check", "--study", "rp", "--home", str(tmp_path), "--json", *flags)
        report: dict = json.loads(result.stdout)  # type: ignore[type-arg]
        return report

    report = check()
    assert not report["consistent"]
    assert report["problems"] == [
        f"confirmation of trial {row['trial_number']} on seed 2 (data seed 2): no MLflow run"
    ]
    assert check("--repair")["consistent"]
    report = check()
    assert report["consistent"] and not report["problems"], report
    assert report["confirmation_rows"] == report["confirmation_runs"] == 2
    (again,) = client.search_runs([experiment.experiment_id], where)
    assert again.info.run_id != gone.info.run_id and again.info.status == "FINISHED"
    assert again.data.metrics["test_loss"] == row["values"][1]
    assert again.data.tags["sweeps.candidate"] == str(row["trial_number"])
    assert again.data.params["seed"] == "2"
    doc = _confirm(tmp_path, "rp", "--seeds", "2")
    assert doc["candidates"][0]["values"] == row["values"]  # nothing trained again


def test_run_with_confirm_confirms_when_the_study_ends(tmp_path: Path) -> None:
    doc = invoke_json(
        "run",
        "--study",
        "rc",
        "--home",
        str(tmp_path),
        "--penalties",
        "none,l2",
        "--trials",
        "4",
        "--epochs",
        "10",
        "--quiet",
        "--no-track",
        "--confirm",
        "2",
    )
    assert doc["confirmation"]["seeds"] == [1, 2]
    assert len(doc["confirmation"]["candidates"]) == 2


def test_best_and_compare_show_the_confirmed_mean_beside_the_search_value(
    tmp_path: Path,
) -> None:
    _study(tmp_path, "bc", "--penalties", "none,l2", "--trials", "4", "--epochs", "10")
    before = invoke_json("best", "--study", "bc", "--home", str(tmp_path))
    assert all("confirmed_mean" not in row for row in before)
    doc = _confirm(tmp_path, "bc", "--seeds", "3")
    means = {c["trial_number"]: (c["mean"], c["ci_low"], c["ci_high"]) for c in doc["candidates"]}
    for command in ("best", "compare"):
        rows = invoke_json(command, "--study", "bc", "--home", str(tmp_path))
        for row in rows:
            confirmed = (row["confirmed_mean"], row["confirmed_ci_low"], row["confirmed_ci_high"])
            assert confirmed == means[row["trial_number"]] and row["confirmed_seeds"] == 3
    text = invoke("best", "--study", "bc", "--home", str(tmp_path)).stdout
    assert "confirmed_mean" in text.splitlines()[0]

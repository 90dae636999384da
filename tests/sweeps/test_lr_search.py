"""The learning rate in the search space (`--lr-min/--lr-max`): bad ranges refused in one
line, drawn log-uniformly for every penalty by each sampler, kept with the study on resume,
trained in a stack as sequentially, shown by the tables and confirmed with its lr."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution

from sweeps import training
from sweeps.attr_keys import SPACE_ATTR
from sweeps.cli.process import quiet_optuna
from sweeps.config import SamplerKind, SweepConfig
from sweeps.lookup import list_trials
from sweeps.runner import run_study
from sweeps.sampling import Space, grid_points, grid_size, lambda_grid, lr_grid, propose, suggest
from sweeps.storage import resolve_stores
from sweeps.study import check_space
from tests.sweeps.cli_helpers import assert_usage_error, invoke, invoke_json
from tests.sweeps.study_helpers import load
from trainer import Penalty, load_task, train

RANGE = ("--lr-min", "1e-3", "--lr-max", "5e-3")  # d2l's 0.003 inside; 200 inputs: no divergence
QUICK = ("--epochs", "5", "--quiet", "--no-track")


def _run(home: Path, study: str, *flags: str) -> Any:
    result = invoke("run", "--study", study, "--home", str(home), *QUICK, *flags)
    assert result.exit_code == 0, result.stderr
    return result


def _trials(home: Path, study: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = invoke_json("trials", "--study", study, "--home", str(home))
    return rows


def _space(home: Path, study: str) -> dict[str, Any]:
    stored: dict[str, Any] = load(study, f"sqlite:///{home / 'sweeps.db'}").user_attrs[SPACE_ATTR]
    return stored


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--lr-min", "1e-3"], "give both --lr-min and --lr-max"),
        (["--lr-max", "1e-3"], "give both --lr-min and --lr-max"),
        (["--lr-min", "0", "--lr-max", "1"], "need 0 < --lr-min <= --lr-max, got 0 and 1"),
        (["--lr-min", "0.1", "--lr-max", "0.01"], "need 0 < --lr-min <= --lr-max"),
        (["--lr-min", "-1", "--lr-max", "0.01"], "need 0 < --lr-min <= --lr-max"),
        (["--lr-min", "nan", "--lr-max", "1"], "--lr-min must be a finite number"),
        (["--lr-min", "1e-3", "--lr-max", "inf"], "--lr-max must be a finite number"),
        (["--lr-min", "1e-3", "--lr-max", "1e7"], "--lr-max must be at most 1e+06"),
        (["--lr", "0.01", *RANGE], "give either --lr (a fixed lr) or --lr-min/--lr-max"),
    ],
)
def test_a_bad_lr_range_is_one_line_and_writes_nothing(
    tmp_path: Path, flags: list[str], fragment: str
) -> None:
    home = tmp_path / "home"
    result = invoke("run", "--study", "s", "--home", str(home), *QUICK, *flags)
    assert_usage_error(result, fragment)
    assert not home.exists()


def test_a_config_file_holds_the_range_and_checks_its_type(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('study = "s"\nlr-min = 1e-3\nlr_max = 0.01\n')
    bad = tmp_path / "bad.toml"
    bad.write_text('study = "s"\nlr-min = "small"\nlr-max = 0.01\n')
    from sweeps.config import load_toml

    cfg = SweepConfig.from_mapping(load_toml(good))
    assert (cfg.lr_min, cfg.lr_max, cfg.searches_lr) == (1e-3, 0.01, True)
    home = tmp_path / "home"
    result = invoke("run", "--config", str(bad), "--home", str(home), *QUICK)
    assert_usage_error(result, "option lr-min must be float")
    assert not home.exists()


@pytest.mark.parametrize("sampler", [s for s in SamplerKind if s is not SamplerKind.GRID])
def test_every_sampler_draws_lr_log_uniformly_for_every_penalty(sampler: SamplerKind) -> None:
    quiet_optuna()
    penalties = (Penalty.NONE, Penalty.L2, Penalty.ELASTIC_NET)
    cfg = SweepConfig("s", penalties=penalties, sampler=sampler, lr_min=1e-4, lr_max=0.1)
    check_space(cfg)
    from sweeps.study import make_sampler

    study = optuna.create_study(sampler=make_sampler(cfg))
    study.enqueue_trial({"penalty": "none"})  # `none` too: it has an lr, if no λ
    seen = set()
    for _ in range(12):
        trial = study.ask()
        config = suggest(trial, cfg)
        assert 1e-4 <= config.lr <= 0.1 and config.lr == trial.params["lr"]
        assert trial.distributions["lr"] == FloatDistribution(1e-4, 0.1, log=True)
        seen.add(config.penalty)
        study.tell(trial, abs(math.log10(config.lr) + 2))
    assert Penalty.NONE in seen and len(seen) > 1


def test_without_a_range_lr_is_the_base_lr_and_no_parameter() -> None:
    cfg = SweepConfig("s", base=SweepConfig("s").base.replace(lr=0.01))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    assert suggest(trial, cfg).lr == 0.01 and "lr" not in trial.params
    assert not cfg.searches_lr and lr_grid(cfg) == []


def test_the_grid_takes_every_point_at_each_lr() -> None:
    base = SweepConfig("s", penalties=(Penalty.NONE, Penalty.L2), sampler=SamplerKind.GRID)
    cfg = SweepConfig(
        "s", penalties=base.penalties, sampler=base.sampler, grid_points=3, lr_min=1e-3,
        lr_max=0.1,
    )  # fmt: skip
    assert lr_grid(cfg) == pytest.approx([1e-3, 1e-2, 1e-1])
    assert grid_size(cfg) == 3 * (1 + 3)
    points = grid_points(cfg)
    assert len({json.dumps(p, sort_keys=True) for p in points}) == grid_size(cfg)
    for lr in lr_grid(cfg):
        at = [p for p in points if p["lr"] == lr]
        assert sorted(p.get("lambda", 0.0) for p in at) == [0.0, *lambda_grid(cfg)]
    configs = [suggest(optuna.trial.FixedTrial(p), cfg) for p in points]
    assert {c.lr for c in configs} == set(lr_grid(cfg))
    one = SweepConfig(
        "s", penalties=base.penalties, sampler=base.sampler, grid_points=3, lr_min=0.02,
        lr_max=0.02,
    )  # fmt: skip
    assert lr_grid(one) == [0.02] and grid_size(one) == 1 + 3
    check_space(one)


def test_a_round_models_lr_and_proposes_near_the_good_one() -> None:
    space = Space(("none", "l2"), 1e-4, 10.0, lr=(1e-4, 1.0))
    quiet_optuna()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    cfg = SweepConfig("s", penalties=(Penalty.NONE, Penalty.L2), lambda_min=1e-4,
                      lambda_max=10.0, lr_min=1e-4, lr_max=1.0)  # fmt: skip
    for _ in range(80):
        trial = study.ask()
        lr = suggest(trial, cfg).lr
        study.tell(trial, abs(math.log(lr / 0.01)))
    rng = np.random.default_rng(0)
    prior = propose([], space, 64, rng)
    modelled = propose(study.trials, space, 64, rng)
    for proposals in (prior, modelled):
        assert all(1e-4 <= p["lr"] <= 1.0 for p in proposals)
        assert {p["penalty"] for p in proposals} == {"none", "l2"}

    def spread(proposals: list[dict[str, Any]]) -> float:
        return float(np.median([abs(math.log(p["lr"] / 0.01)) for p in proposals]))

    assert spread(modelled) < spread(prior) / 2
    fixed = Space(("none", "l2"), 1e-4, 10.0, lr=(0.02, 0.02))
    assert "lr" not in fixed.dims("l2")  # one value: no dimension to model
    assert {p["lr"] for p in propose(study.trials, fixed, 16, rng)} == {0.02}


def test_a_fixed_lr_is_signed_as_lr_and_a_searched_one_as_its_range() -> None:
    fixed = SweepConfig("s").space_signature()
    assert "lr_min" not in fixed and "lr_max" not in fixed and fixed["lr"] == 0.003
    searched = SweepConfig("s", lr_min=1e-3, lr_max=0.01).space_signature()
    assert (searched["lr_min"], searched["lr_max"]) == (1e-3, 0.01) and "lr" not in searched
    assert {k: v for k, v in searched.items() if not k.startswith("lr")} == {
        k: v for k, v in fixed.items() if k != "lr"
    }


def test_a_resume_keeps_the_stored_space(tmp_path: Path) -> None:
    _run(tmp_path, "fixed", "--trials", "1")
    before = _space(tmp_path, "fixed")
    assert_usage_error(
        invoke("run", "--study", "fixed", "--home", str(tmp_path), *QUICK, *RANGE),
        "exists with a different search space",
        "lr_min: None there, 0.001 here",
    )
    _run(tmp_path, "fixed", "--trials", "1")  # a plain resume adds no lr dimension
    assert _space(tmp_path, "fixed") == before and "lr_min" not in before
    assert {t["lr"] for t in _trials(tmp_path, "fixed")} == {0.003}

    _run(tmp_path, "searched", *RANGE, "--trials", "2")
    searched = _space(tmp_path, "searched")
    _run(tmp_path, "searched", "--trials", "2")  # no lr named: the stored range holds
    assert _space(tmp_path, "searched") == searched
    for flags, fragment in [
        (["--lr", "0.002"], "lr_min: 0.001 there, None here"),
        (["--lr-min", "1e-3", "--lr-max", "1e-2"], "lr_max: 0.005 there, 0.01 here"),
    ]:
        result = invoke("run", "--study", "searched", "--home", str(tmp_path), *QUICK, *flags)
        assert_usage_error(result, "exists with a different search space", fragment)
    joined = invoke("worker", "--study", "searched", "--home", str(tmp_path), "--trials", "2",
                    "--quiet", "--no-track")  # fmt: skip
    assert joined.exit_code == 0, joined.stderr
    trials = _trials(tmp_path, "searched")
    trained = [t for t in trials if t["reused_from"] is None]  # a repeat takes its twin's
    assert len(trained) == 6 and len({t["lr"] for t in trained}) == 6
    assert all(1e-3 <= t["lr"] <= 5e-3 for t in trials)


def test_a_stacked_round_of_different_lrs_equals_sequential_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stacks: list[list[float]] = []
    real = training.train_batch

    def recorded(cfgs: Any, *args: Any, **kwargs: Any) -> Any:
        stacks.append([c.lr for c in cfgs])
        return real(cfgs, *args, **kwargs)

    monkeypatch.setattr(training, "train_batch", recorded)
    quiet_optuna()
    cfg = SweepConfig.from_mapping(
        {"study": "k", "penalties": "none,l1,l2,elastic_net", "lambda_min": 1e-3,
         "lambda_max": 3.0, "lr_min": 1e-3, "lr_max": 5e-3, "trials": 8, "batch": 8,
         "epochs": 20, "pruner": "none", "sampler": "random"}
    )  # fmt: skip
    stores = resolve_stores(str(tmp_path), None, None)
    outcome = run_study(cfg, stores, track=False, quiet=True)
    assert outcome.counts == {"COMPLETE": 8}
    assert len(stacks) == 1 and len(set(stacks[0])) == 8  # one stack, eight lrs
    task = load_task(cfg.base)
    for row in list_trials(stores, "k"):
        alone = train(
            cfg.base.replace(
                penalty=row["penalty"], lambda_=row["lambda"] or 0.0, l1_ratio=row["l1_ratio"],
                lr=row["lr"],
            ),
            task,
        ).final  # fmt: skip
        for metric in ("train_loss", "val_loss", "test_loss", "w_norm"):
            assert row[metric] == pytest.approx(alone[metric], rel=1e-5, abs=1e-7), metric


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A home with a study that searches lr and one that does not; the searched one's
    run summary."""
    home = tmp_path_factory.mktemp("lr")
    fixed = ("--penalties", "none,l2", "--trials", "3")
    assert invoke("run", "--study", "f", "--home", str(home), *QUICK, *fixed).exit_code == 0
    searched = invoke("run", "--study", "s", "--home", str(home), *QUICK, *fixed, *RANGE)
    assert searched.exit_code == 0, searched.stderr
    return home, searched.stdout


def _header(*args: str) -> list[str]:
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr
    return result.stdout.splitlines()[0].split()


def test_tables_show_lr_where_it_is_searched(two: tuple[Path, str]) -> None:
    home, summary = two
    at = ("--home", str(home))
    assert "lr" in summary.splitlines()[1].split()  # the run's own best table
    for command in ("best", "trials"):
        assert "lr" in _header(command, "--study", "s", *at)
        assert "lr" not in _header(command, "--study", "f", *at)
    assert "lr" in _header("compare", *at)  # one study of them searched lr
    assert "lr" not in _header("compare", "--study", "f", *at)
    best = invoke_json("best", "--study", "s", *at)
    trials = {t["number"]: t for t in _trials(home, "s")}
    for row in best:
        assert row["lr"] == trials[row["trial_number"]]["lr"]
    assert {row["lr"] for row in invoke_json("best", "--study", "f", *at)} == {0.003}


def test_confirm_retrains_each_candidate_with_its_searched_lr(two: tuple[Path, str]) -> None:
    home, _ = two
    at = ("--home", str(home))
    doc = invoke_json("confirm", "--study", "s", *at, "--no-track", "--seeds", "2")
    trials = {t["number"]: t for t in _trials(home, "s")}
    assert {c["penalty"] for c in doc["candidates"]} == {"none", "l2"}
    for cand in doc["candidates"]:
        lr = trials[cand["trial_number"]]["lr"]
        assert cand["lr"] == lr and lr != 0.003
        for seed, value in zip(doc["seeds"], cand["values"], strict=True):
            flags = ["--penalty", cand["penalty"], "--lr", repr(lr), "--seed", str(seed)]
            if cand["penalty"] != "none":
                flags += ["--lambda", repr(cand["lambda"])]
            alone = invoke_json("train", *flags, "--epochs", "5", "--no-track", *at)
            assert alone["test_loss"] == pytest.approx(value, rel=1e-6)
    text = invoke("confirm", "--study", "s", *at, "--no-track", "--seeds", "2").stdout
    assert f"lr={doc['candidates'][0]['lr']:.3g}" in text


@pytest.mark.slow
def test_the_parent_run_names_the_range_and_its_table_each_lr(tmp_path: Path) -> None:
    import csv
    import io

    from mlflow.tracking import MlflowClient

    args = ("--study", "t", "--home", str(tmp_path), "--epochs", "5", "--quiet")
    result = invoke("run", *args, "--penalties", "none,l2", "--trials", "4", "--batch", "4", *RANGE)
    assert result.exit_code == 0, result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("t")
    assert experiment is not None
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`sweeps.role` = 'parent'")
    params = parent.data.params
    assert (params["lr_min"], params["lr_max"]) == ("0.001", "0.005") and "lr" not in params
    path = client.download_artifacts(parent.info.run_id, "trials.csv", str(tmp_path))
    rows = list(csv.DictReader(io.StringIO(Path(path).read_text())))
    by_number = {t["number"]: t["lr"] for t in _trials(tmp_path, "t")}
    assert {int(r["number"]): float(r["lr"]) for r in rows} == by_number

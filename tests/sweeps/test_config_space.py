import itertools
import json
import math
from pathlib import Path

import optuna
import pytest

from sweeps.config import PrunerKind, SamplerKind, SweepConfig, load_toml
from sweeps.errors import UsageError
from sweeps.sampling import grid_size, lambda_grid, suggest
from tests.sweeps.cli_helpers import assert_usage_error, invoke
from trainer import Penalty, TrialConfig


def test_flags_override_toml(tmp_path: Path) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text(
        'study = "s"\npenalties = ["l1", "l2"]\nlambda-min = 0.01\ntrials = 7\nepochs = 50\n'
        'n_train = 30\n[sweep]\nsampler = "random"\n'
    )
    values = load_toml(path)
    values.update({"trials": 9})
    cfg = SweepConfig.from_mapping(values)
    assert cfg.penalties == (Penalty.L1, Penalty.L2)
    assert cfg.lambda_min == 0.01 and cfg.trials == 9 and cfg.base.epochs == 50
    assert cfg.sampler is SamplerKind.RANDOM and cfg.pruner is PrunerKind.MEDIAN
    assert cfg.base.options == {"n_train": 30}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lambda_min": 1.0, "lambda_max": 1.0}, "lambda-min"),
        ({"lambda_min": 0.0}, "lambda-min"),
        ({"lambda_min": -1.0}, "lambda-min"),
        ({"penalties": ""}, "--penalties"),
        ({"penalties": "l2,l7"}, "unknown penalty"),
        ({"sampler": "anneal"}, "unknown sampler"),
        ({"pruner": "asha"}, "unknown pruner"),
        ({"trials": 0}, "--trials"),
        ({"workers": -1}, "--workers"),
        ({"epochs": 0}, "epochs"),
        ({"colour": "red"}, "unknown sweep option"),
    ],
)
def test_invalid_sweeps(values: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        SweepConfig.from_mapping({"study": "s", **values})


def test_missing_toml_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_toml(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("study = [")
    with pytest.raises(UsageError, match="cannot read"):
        load_toml(bad)


def test_a_deeply_nested_config_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "deep.toml"
    config.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    home = tmp_path / "home"
    args = ["run", "--config", str(config), "--trials", "1", "--epochs", "2", "--no-track"]
    result = invoke(*args, "--home", str(home))
    assert_usage_error(result, str(config), "nests arrays or tables too deeply")
    assert not home.exists()


def test_suggest_is_conditional() -> None:
    cfg = SweepConfig(study="s")
    none = suggest(optuna.trial.FixedTrial({"penalty": "none"}), cfg)
    assert none.penalty is Penalty.NONE and none.lambda_ == 0.0 and none.l1_ratio is None
    l2 = suggest(optuna.trial.FixedTrial({"penalty": "l2", "lambda": 3.0}), cfg)
    assert l2.penalty is Penalty.L2 and l2.lambda_ == 3.0 and l2.l1_ratio is None
    enet = suggest(
        optuna.trial.FixedTrial({"penalty": "elastic_net", "lambda": 0.1, "l1_ratio": 0.3}), cfg
    )
    assert enet.l1_ratio == 0.3 and enet.epochs == cfg.base.epochs


def test_suggest_uses_the_declared_distributions() -> None:
    cfg = SweepConfig(study="s", penalties=(Penalty.L1, Penalty.ELASTIC_NET), lambda_max=10)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        tc = suggest(trial, cfg)
        assert tc.penalty in cfg.penalties
        assert cfg.lambda_min <= tc.lambda_ <= 10
        dist = trial.distributions["lambda"]
        assert isinstance(dist, optuna.distributions.FloatDistribution) and dist.log
        assert ("l1_ratio" in trial.params) == (tc.penalty is Penalty.ELASTIC_NET)
        study.tell(trial, 1.0)


def test_grid() -> None:
    cfg = SweepConfig(
        study="s",
        lambda_min=1e-3,
        lambda_max=10,
        grid_points=5,
        sampler=SamplerKind.GRID,
        penalties=(Penalty.NONE, Penalty.L2),
    )
    grid = lambda_grid(cfg)
    assert grid[0] == pytest.approx(1e-3) and grid[-1] == pytest.approx(10)
    ratios = [b / a for a, b in itertools.pairwise(grid)]
    assert all(math.isclose(r, 10.0) for r in ratios)
    assert grid_size(cfg) == 6


def test_space_signature_ignores_device_and_sampler() -> None:
    a = SweepConfig.from_mapping({"study": "s", "device": "cpu", "sampler": "tpe"})
    b = SweepConfig.from_mapping({"study": "s", "device": "auto", "sampler": "random"})
    c = SweepConfig.from_mapping({"study": "s", "lambda_max": 5.0})
    assert a.space_signature() == b.space_signature() != c.space_signature()


def _searched(tmp_path: Path, *args: str) -> tuple[list[str], str]:
    home = str(tmp_path / "home")
    run = ["run", "--study", "-".join(args) or "d", "--create-only", "--home", home]
    done = invoke(*run, "--no-track", "--json", *args)
    assert done.exit_code == 0, done.stderr
    return json.loads(done.stdout)["penalties"], done.stderr


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_default_set_leaves_out_weight_decay_where_it_is_l2_and_says_so(
    tmp_path: Path, optimizer: str
) -> None:
    searched, said = _searched(tmp_path, "--optimizer", optimizer)
    assert searched == ["none", "l1", "l2", "l2_unsquared", "elastic_net"]
    assert said.strip() == (
        f"sweeps: weight_decay left out: identical to l2 under {optimizer};"
        " name both with --penalties to keep both"
    )
    assert SweepConfig(study="lib", base=TrialConfig(optimizer=optimizer)).penalties == tuple(
        Penalty(p) for p in searched
    )


def test_adamw_decouples_weight_decay_so_the_default_set_keeps_it(tmp_path: Path) -> None:
    searched, said = _searched(tmp_path, "--optimizer", "adamw")
    assert "weight_decay" in searched and "l2" in searched and said == ""


def test_naming_both_keeps_both(tmp_path: Path) -> None:
    searched, said = _searched(tmp_path, "--penalties", "l2,weight_decay")
    assert searched == ["l2", "weight_decay"] and said == ""


def test_a_resume_naming_no_penalties_keeps_the_studys_own(tmp_path: Path) -> None:
    """A study created with every penalty (the default set of an earlier version) resumes
    without --penalties: its own set, not today's default, and no note about it."""
    every = ",".join(p.value for p in Penalty)
    home = str(tmp_path / "h")
    base = ["run", "--study", "s", "--epochs", "1", "--no-track", "--json", "--home", home]
    created = invoke(*base, "--trials", "1", "--penalties", every)
    assert created.exit_code == 0, created.stderr
    resumed = invoke(*base, "--trials", "1")
    assert resumed.exit_code == 0, resumed.stderr
    assert json.loads(resumed.stdout)["penalties"] == every.split(",")
    assert "left out" not in resumed.stderr


@pytest.mark.parametrize(("optimizer", "same"), [("sgd", True), ("adam", True), ("adamw", False)])
def test_weight_decay_trains_as_l2_exactly_where_the_default_set_says(
    optimizer: str, same: bool
) -> None:
    """The rule's premise: the same run, bit for bit, under sgd and adam (coupled decay)."""
    results = [
        json.loads(
            invoke(
                "train",
                "--penalty",
                penalty,
                "--lambda",
                "0.5",
                "--optimizer",
                optimizer,
                "--lr",
                "0.01",
                "--epochs",
                "20",
                "--no-track",
                "--json",
            ).stdout
        )
        for penalty in ("l2", "weight_decay")
    ]
    keys = ("train_loss", "test_loss", "w_norm")
    assert ([results[0][k] for k in keys] == [results[1][k] for k in keys]) is same

"""One model per round (sweeps.sampling): search quality, ordinary Optuna trials, K = 1 as
before, the round's asks fit no model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from sweeps import sampling
from sweeps.config import SweepConfig
from sweeps.sampling import (
    GRID_POINTS,
    MAX_COMPONENTS,
    STARTUP_TRIALS,
    Features,
    Parzen,
    RoundSampler,
    Space,
    propose,
    suggest,
)
from sweeps.study import make_sampler
from tests.sweeps.cli_helpers import invoke
from tests.sweeps.study_helpers import grid_test_loss
from trainer import Penalty

CFG = SweepConfig(
    study="s", penalties=(Penalty.NONE, Penalty.L2, Penalty.ELASTIC_NET), lambda_min=1e-4,
    lambda_max=10.0,
)  # fmt: skip
SPACE = Space(("none", "l2", "elastic_net"), 1e-4, 10.0)


def _history(
    n: int, cfg: SweepConfig = CFG, best_lambda: float = 0.1
) -> list[optuna.trial.FrozenTrial]:
    """n finished random trials of cfg's space, whose loss is the distance of log λ from
    `best_lambda` (10 without λ: `none` is bad)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(n):
        trial = study.ask()
        lam = suggest(trial, cfg).lambda_
        loss = abs(math.log(lam / best_lambda)) if lam else 10.0
        study.tell(trial, loss)
    return study.trials


def test_parzen_is_a_density_on_its_range() -> None:
    kde = Parzen.fit(np.array([0.2, 0.25, 0.9]), (0.0, 1.0))
    grid = np.linspace(0.0, 1.0, 20001)
    mass = float(np.trapezoid(np.exp(kde.log_pdf(grid)), grid))
    assert mass == pytest.approx(1.0, abs=1e-3)
    drawn = kde.sample(np.random.default_rng(0), 10_000)
    assert drawn.min() >= 0.0 and drawn.max() <= 1.0
    assert np.mean(drawn < 0.5) > 0.5  # two of three observations are there


@pytest.mark.parametrize("n", [3, 300, 5000])
def test_bounded_cost_keeps_the_density(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past GRID_POINTS evaluations the log density is read off a grid, and past
    MAX_COMPONENTS observations evenly spaced order statistics stand for them: both
    stay close to the exact mixture of every observation."""
    rng = np.random.default_rng(n)
    observed = rng.normal(-3.0, 2.0, n).clip(-11.5, 4.6)
    bounds = (-11.5, 4.6)
    kde = Parzen.fit(observed, bounds)
    assert kde.mu.size == min(n, MAX_COMPONENTS) + 1  # + the prior
    x = rng.uniform(*bounds, 3 * GRID_POINTS)
    exact = np.concatenate([kde.log_pdf(part) for part in np.split(x, 3)])  # exact path
    assert np.abs(kde.log_pdf(x) - exact).max() < 5e-3
    monkeypatch.setattr(sampling, "MAX_COMPONENTS", n)
    every = Parzen.fit(observed, bounds)
    grid = np.linspace(*bounds, 2001)
    gap = np.trapezoid(np.abs(np.exp(kde.log_pdf(grid)) - np.exp(every.log_pdf(grid))), grid)
    assert gap < 0.1  # total variation: the capped density keeps the shape


def test_the_prior_before_the_startup_trials() -> None:
    """Random proposals first, as TPE starts: not drawn towards the good region."""
    rng = np.random.default_rng(0)
    early = propose(_history(STARTUP_TRIALS - 1), SPACE, 3000, rng)
    counts = {p: sum(q["penalty"] == p for q in early) for p in SPACE.penalties}
    assert all(900 < n < 1100 for n in counts.values()), counts
    lams = np.log10([q["lambda"] for q in early if "lambda" in q])
    assert lams.min() >= -4 and lams.max() <= 1 and abs(np.median(lams) - -1.5) < 0.2
    ratios = [q["l1_ratio"] for q in early if "l1_ratio" in q]
    assert abs(np.mean(ratios) - 0.5) < 0.05
    near = [q for q in early if "lambda" in q and abs(math.log10(q["lambda"] / 0.1)) < 1]
    assert len(near) < 0.5 * len(lams)  # ~2/5 of a uniform log range


def test_proposals_are_inside_the_space_and_near_the_good_region() -> None:
    proposals = propose(_history(60), SPACE, 64, np.random.default_rng(1))
    assert len(proposals) == 64
    for p in proposals:
        assert p["penalty"] in SPACE.penalties
        assert ("lambda" in p) == (p["penalty"] != "none")
        assert ("l1_ratio" in p) == (p["penalty"] == "elastic_net")
        assert 1e-4 <= p.get("lambda", 1e-4) <= 10.0 and 0 <= p.get("l1_ratio", 0) <= 1
    near = [p for p in proposals if "lambda" in p and abs(math.log10(p["lambda"] / 0.1)) < 1]
    assert len(near) > len(proposals) / 2  # better than the random mix (~1/5 of the range)
    # Both penalties with λ are as good (the loss depends on λ alone); `none` is bad.
    assert {p["penalty"] for p in proposals} == {"l2", "elastic_net"}


def test_a_history_read_once_gives_the_same_proposals() -> None:
    """`Features` keeps each trial's reading across rounds: the proposals of rounds over a
    growing history are those of reading it all every round, and a trial object that
    changed state since (another worker failed it) is read again."""
    trials = _history(300)
    features = Features(SPACE)
    for size in (20, 100, 300):
        kept = propose(trials[:size], SPACE, 32, np.random.default_rng(size), features)
        assert kept == propose(trials[:size], SPACE, 32, np.random.default_rng(size))
    assert features.history(trials).size == 300
    trials[0].state = TrialState.FAIL  # FAIL trials are not modelled
    assert features.history(trials).size == 299


def _asked(
    sampler: optuna.samplers.BaseSampler, plan: int, cfg: SweepConfig
) -> list[dict[str, Any]]:
    study = optuna.create_study(sampler=sampler)
    for trial in _history(20, cfg):
        study.add_trial(trial)
    if isinstance(sampler, RoundSampler):
        sampler.plan(study.get_trials(deepcopy=False), plan)
    params = []
    for _ in range(4):
        trial = study.ask()
        suggest(trial, cfg)
        params.append(trial.params)
        study.tell(trial, 1.0)
    return params


def test_rounds_of_one_are_sampled_by_optunas_own_tpe() -> None:
    cfg = SweepConfig(study="s", penalties=(Penalty.NONE, Penalty.L2), batch=1)
    wrapped = make_sampler(cfg)
    assert isinstance(wrapped, RoundSampler)
    plain = optuna.samplers.TPESampler(seed=cfg.base.seed, multivariate=True, group=True)
    assert _asked(wrapped, 1, cfg) == _asked(plain, 1, cfg)


def test_a_planned_round_fits_no_model_per_ask() -> None:
    calls = []

    class Counting(optuna.samplers.TPESampler):
        def sample_relative(self, *args: Any) -> dict[str, Any]:
            calls.append(args)
            result: dict[str, Any] = super().sample_relative(*args)
            return result

    cfg = SweepConfig(study="s", penalties=(Penalty.NONE, Penalty.L2))
    space = Space(("none", "l2"), cfg.lambda_min, cfg.lambda_max)
    sampler = RoundSampler(Counting(seed=0, multivariate=True, group=True), space, 0)
    asked = _asked(sampler, 4, cfg)
    assert calls == [] and len(asked) == 4
    assert all(p["penalty"] in ("none", "l2") for p in asked)


def test_planned_trials_are_ordinary_optuna_trials(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    cfg = SweepConfig(study="o", penalties=(Penalty.L2, Penalty.ELASTIC_NET))
    sampler = make_sampler(cfg)
    assert isinstance(sampler, RoundSampler)
    study = optuna.create_study(study_name="o", storage=storage, sampler=sampler)
    for trial in _history(20, cfg):
        study.add_trial(trial)
    # A retried trial (enqueued with its parameters) keeps them and takes no proposal.
    study.enqueue_trial({"penalty": "l2", "lambda": 0.5})
    assert sampler.plan(study.get_trials(deepcopy=False), 3) == 3
    asked = [study.ask() for _ in range(3)]
    configs = [suggest(trial, cfg) for trial in asked]
    assert (configs[0].penalty, configs[0].lambda_) == (Penalty.L2, 0.5)
    for trial in asked:
        study.tell(trial, 1.0)
    # Read back by a plain Optuna, the planned trials carry the space's distributions.
    reread = optuna.load_study(study_name="o", storage=storage).trials[-3:]
    assert [t.state for t in reread] == [TrialState.COMPLETE] * 3
    for trial in reread[1:]:
        dists = trial.distributions
        assert dists["penalty"] == optuna.distributions.CategoricalDistribution(
            ["l2", "elastic_net"]
        )
        assert dists["lambda"] == optuna.distributions.FloatDistribution(1e-5, 100, log=True)
        if trial.params["penalty"] == "elastic_net":
            assert dists["l1_ratio"] == optuna.distributions.FloatDistribution(0.0, 1.0)
    assert sampler.plan([], 1) == 0  # a round of one: Optuna's TPE decides


@pytest.mark.slow
def test_rounds_of_eight_find_a_good_lambda_as_sequential_tpe_does(tmp_path: Path) -> None:
    """The d2l space {none, l2}: 30 trials in rounds of 8 come within 1.5x of the best
    test loss on a dense λ grid (sequential TPE: tests/sweeps/test_study.py)."""
    result = invoke(
        "run", "--home", str(tmp_path / "h"), "--no-track", "--json", "--study", "b",
        "--penalties", "none,l2", "--lambda-min", "1e-3", "--lambda-max", "100",
        "--trials", "30", "--batch", "8", "--pruner", "none",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    best = json.loads(result.stdout)["best"][0]
    assert best["penalty"] == "l2"
    grid = grid_test_loss([10 ** (-3 + 5 * i / 39) for i in range(40)])
    assert best["test_loss"] <= 1.5 * min(grid.values()), (best, min(grid.values()))

"""The search space: the one place that turns an Optuna trial into a TrialConfig.

λ is suggested only when the penalty is not `none` (a conditional space) and `l1_ratio`
only for elastic_net. Under the grid sampler λ and l1_ratio come from fixed log-spaced /
linear grids as categorical choices, so Optuna's BruteForceSampler can enumerate the
conditional space exactly (GridSampler cannot express conditional parameters).
"""

from __future__ import annotations

import math

import optuna

from sweeps.config import SamplerKind, SweepConfig
from trainer.config import Penalty, TrialConfig

L1_RATIO_GRID = (0.25, 0.5, 0.75)


def lambda_grid(cfg: SweepConfig) -> list[float]:
    """`grid_points` values log-spaced over [lambda_min, lambda_max], ends included."""
    lo, hi, n = math.log10(cfg.lambda_min), math.log10(cfg.lambda_max), cfg.grid_points
    if n == 1:
        return [cfg.lambda_min]
    return [10 ** (lo + (hi - lo) * i / (n - 1)) for i in range(n)]


def suggest(trial: optuna.trial.BaseTrial, cfg: SweepConfig) -> TrialConfig:
    """Sample penalty, λ and l1_ratio; everything else comes from the study's base config."""
    penalty = Penalty(trial.suggest_categorical("penalty", [p.value for p in cfg.penalties]))
    lam, l1_ratio = 0.0, None
    grid = cfg.sampler is SamplerKind.GRID
    if penalty is not Penalty.NONE:
        if grid:
            lam = float(trial.suggest_categorical("lambda", lambda_grid(cfg)))
        else:
            lam = trial.suggest_float("lambda", cfg.lambda_min, cfg.lambda_max, log=True)
    if penalty is Penalty.ELASTIC_NET:
        if grid:
            l1_ratio = float(trial.suggest_categorical("l1_ratio", list(L1_RATIO_GRID)))
        else:
            l1_ratio = trial.suggest_float("l1_ratio", 0.0, 1.0)
    return cfg.base.replace(penalty=penalty, lambda_=lam, l1_ratio=l1_ratio)


def grid_size(cfg: SweepConfig) -> int:
    """How many distinct points the grid sampler has."""
    per = {Penalty.NONE: 1, Penalty.ELASTIC_NET: cfg.grid_points * len(L1_RATIO_GRID)}
    return sum(per.get(p, cfg.grid_points) for p in cfg.penalties)

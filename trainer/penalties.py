"""Penalties as pure functions of the penalized tensors, plus the rule choosing them.

Scope rule (`--penalize`):
  - `weights` (default): tensors with dim >= 2, so biases are left alone, as in d2l and
    nanoGPT's `configure_optimizers`;
  - `all`: every parameter;
  - `GLOB,GLOB,...`: parameters whose qualified name matches one of the globs
    (fnmatch, case-sensitive), e.g. `0.weight` to penalize the first layer only.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

import torch

from trainer.config import Penalty, TrialConfig
from trainer.errors import ConfigError

NamedTensors = list[tuple[str, torch.nn.Parameter]]


def select_penalized(named: Iterable[tuple[str, torch.nn.Parameter]], scope: str) -> NamedTensors:
    """Split-free selection: the (name, tensor) pairs the penalty covers, in model order."""
    params = list(named)
    scope = scope.strip()
    if scope == "all":
        chosen = params
    elif scope == "weights":
        chosen = [(n, p) for n, p in params if p.dim() >= 2]
    else:
        globs = [g.strip() for g in scope.split(",")]
        for g in globs:
            if not any(fnmatch.fnmatchcase(n, g) for n, _ in params):
                names = ", ".join(n for n, _ in params)
                raise ConfigError(
                    f"--penalize glob {g!r} matches no parameter (parameters: {names})"
                )
        chosen = [(n, p) for n, p in params if any(fnmatch.fnmatchcase(n, g) for g in globs)]
    if not chosen:
        raise ConfigError(f"--penalize {scope!r} selects no parameter of this model")
    return chosen


def l2_norm(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """‖w‖₂ over all penalized tensors taken together."""
    return torch.stack([w.detach().pow(2).sum() for w in weights]).sum().sqrt()


def _half_sq(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum(w.pow(2).sum() for w in weights) / 2  # type: ignore[return-value]


def _abs_sum(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum(w.abs().sum() for w in weights)  # type: ignore[return-value]


def penalty_term(
    weights: Sequence[torch.Tensor], penalty: Penalty, lam: float, l1_ratio: float | None
) -> torch.Tensor | None:
    """The differentiable term added to the data loss, or None when nothing is added.

    `weight_decay` adds nothing here: the optimizer applies it.
    """
    if penalty in (Penalty.NONE, Penalty.WEIGHT_DECAY) or lam == 0.0:
        return None
    if penalty is Penalty.L2:
        return lam * _half_sq(weights)
    if penalty is Penalty.L1:
        return lam * _abs_sum(weights)
    if penalty is Penalty.L2_UNSQUARED:
        return lam * torch.stack([torch.linalg.vector_norm(w) for w in weights]).sum()
    if penalty is Penalty.ELASTIC_NET:
        alpha = 0.5 if l1_ratio is None else l1_ratio
        return lam * (alpha * _abs_sum(weights) + (1 - alpha) * _half_sq(weights))
    raise AssertionError(f"unhandled penalty {penalty}")


def penalty_value(weights: Sequence[torch.Tensor], cfg: TrialConfig) -> torch.Tensor:
    """The penalty's value for reporting; for weight_decay the equivalent λ·½‖w‖²."""
    with torch.no_grad():
        if cfg.penalty is Penalty.WEIGHT_DECAY:
            return cfg.lambda_ * _half_sq(weights)
        term = penalty_term(weights, cfg.penalty, cfg.lambda_, cfg.l1_ratio)
        return torch.zeros((), device=weights[0].device) if term is None else term

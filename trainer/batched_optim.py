"""What each member of a stacked batch minimizes and how it steps: penalty and optimizer.

Both are written so that every member's float32 arithmetic is the one the sequential
trainer does on that member alone (`trainer.penalties`, `trainer.optim`):
  - the penalty is one formula with per-member coefficients whose expression tree is
    `penalty_term`'s for each kind, so autograd produces the same gradients;
  - `p.add_(g, alpha=s)` becomes `p.addcmul_(g, s_k)`: both are one fused multiply-add per
    element on CPU, so the result is bit-identical (a separate `g * s_k` would round twice);
  - Python-double scalars (lr / bias correction, 1 − lr·wd) are computed per member in
    float64 and only then rounded to float32, as the kernel rounds the Python scalar;
  - `p.addcdiv_(m, d, value=v)` is `p + (v·m) / d`, written in that order.
Per-member scalars are [K] tensors viewed as [K, 1, ...] to broadcast over a parameter.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from trainer.config import Optimizer, Penalty, TrialConfig


def per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View a [K] tensor as [K, 1, 1, ...] so it broadcasts over the stacked `like`."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def rows_of(t: torch.Tensor) -> torch.Tensor:
    """[K, ...] → [K, n]: one row per member."""
    return t.flatten(1)


def _total(parts: Iterable[torch.Tensor]) -> torch.Tensor:
    """Left-to-right sum like Python's `sum`, minus its `0 +` (exact: the parts are ≥ 0)."""
    return functools.reduce(operator.add, parts)


def _abs_sum(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    return _total(rows_of(w).abs().sum(1) for w in weights)


def _half_sq(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    return _total(rows_of(w).pow(2).sum(1) for w in weights) / 2


def _norm_sum(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack([torch.linalg.vector_norm(rows_of(w), dim=1) for w in weights], 1).sum(1)


@dataclass(frozen=True)
class PenaltyCoefficients:
    """Per-member [K] float32 factors that let one formula serve every penalty kind.

    λ·(l1·A + sq·H + unsq·N), with A = Σ|w|, H = ½‖w‖², N = Σ_tensors ‖W‖₂, has the
    expression tree of `penalties.penalty_term` for each kind (elastic net: λ·(α·A +
    (1−α)·H)), so autograd yields the same float32 gradients. Unused parts get an exact 0
    (they add ±0), used ones an exact 1. weight_decay has λ only in the reported value.
    Parts no member uses are skipped, which changes nothing but the cost.
    """

    loss_lam: torch.Tensor
    value_lam: torch.Tensor
    l1: torch.Tensor
    sq: torch.Tensor
    value_sq: torch.Tensor
    unsq: torch.Tensor
    used: frozenset[str]  # which of the six columns have a non-zero entry

    @staticmethod
    def of(cfgs: Sequence[TrialConfig], device: torch.device) -> PenaltyCoefficients:
        cols = list(zip(*(_coefficient_row(cfg) for cfg in cfgs), strict=True))
        names = ("loss_lam", "value_lam", "l1", "sq", "value_sq", "unsq")
        used = frozenset(n for n, col in zip(names, cols, strict=True) if any(col))
        t = [torch.tensor(col, dtype=torch.float32, device=device) for col in cols]
        return PenaltyCoefficients(t[0], t[1], t[2], t[3], t[4], t[5], used)

    def select(self, rows: torch.Tensor) -> PenaltyCoefficients:
        return PenaltyCoefficients(
            self.loss_lam[rows],
            self.value_lam[rows],
            self.l1[rows],
            self.sq[rows],
            self.value_sq[rows],
            self.unsq[rows],
            self.used,
        )

    def term(self, weights: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """The [K] penalty added to the loss, or None when no member has one."""
        if "loss_lam" not in self.used:
            return None
        return self._combine(weights, self.loss_lam, self.sq, "sq")

    def value(self, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """The [K] reported penalty_value (weight_decay: λ·½‖w‖²)."""
        if "value_lam" not in self.used:
            return torch.zeros_like(self.value_lam)
        return self._combine(weights, self.value_lam, self.value_sq, "value_sq")

    def _combine(
        self, weights: Sequence[torch.Tensor], lam: torch.Tensor, sq: torch.Tensor, sq_name: str
    ) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        if "l1" in self.used:
            parts.append(self.l1 * _abs_sum(weights))
        if sq_name in self.used:
            parts.append(sq * _half_sq(weights))
        if "unsq" in self.used:
            parts.append(self.unsq * _norm_sum(weights))
        return lam * _total(parts)


def _coefficient_row(cfg: TrialConfig) -> tuple[float, ...]:
    """(loss_lam, value_lam, l1, sq, value_sq, unsq) for one config."""
    lam, kind = cfg.lambda_, cfg.penalty
    alpha = 0.5 if cfg.l1_ratio is None else cfg.l1_ratio
    l1 = {Penalty.L1: 1.0, Penalty.ELASTIC_NET: alpha}.get(kind, 0.0)
    sq = {Penalty.L2: 1.0, Penalty.ELASTIC_NET: 1 - alpha}.get(kind, 0.0)
    unsq = 1.0 if kind is Penalty.L2_UNSQUARED else 0.0
    in_loss = kind not in (Penalty.NONE, Penalty.WEIGHT_DECAY)
    value_sq = 1.0 if kind is Penalty.WEIGHT_DECAY else sq
    value_lam = 0.0 if kind is Penalty.NONE else lam
    return (lam if in_loss else 0.0, value_lam, l1, sq, value_sq, unsq)


# --- optimizer ----------------------------------------------------------------------


@dataclass
class StackedOptimizer:
    """Optimizer state for stacked parameters; position i of every list is parameter i.

    `lr` is [K] float64; `weight_decay[i]` is [K] float64, or None for a parameter no
    member decays (the sequential optimizer's undecayed group). Both stay on the CPU, where
    float64 always exists (MPS has none); their float32 roundings live on `device`.
    """

    kind: Optimizer
    lr: torch.Tensor
    weight_decay: list[torch.Tensor | None]
    device: torch.device
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    step_count: int = 0
    _exp_avg: list[torch.Tensor | None] = field(init=False)
    _exp_avg_sq: list[torch.Tensor | None] = field(init=False)
    # float32 roundings of the per-member scalars, derived once (they never change)
    _neg_lr: torch.Tensor = field(init=False)
    _wd: list[torch.Tensor | None] = field(init=False)
    _adamw_keep: list[torch.Tensor | None] = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.weight_decay)
        self._exp_avg, self._exp_avg_sq = [None] * n, [None] * n
        self._derive()

    def _float32(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(device=self.device, dtype=torch.float32)

    def _derive(self) -> None:
        self._neg_lr = self._float32(-self.lr)
        self._wd = [None if wd is None else self._float32(wd) for wd in self.weight_decay]
        # AdamW's 1 − lr·wd, computed in double as the sequential optimizer does
        self._adamw_keep = [
            None if wd is None else self._float32(1 - self.lr * wd) for wd in self.weight_decay
        ]

    def select(self, rows: list[int]) -> None:
        """Keep only the members at `rows` (e.g. after some diverged or were pruned)."""
        cpu_rows = torch.tensor(rows, dtype=torch.long)
        rows_here = cpu_rows.to(self.device)
        self.lr = self.lr[cpu_rows]
        self.weight_decay = [None if wd is None else wd[cpu_rows] for wd in self.weight_decay]
        self._exp_avg = [None if s is None else s[rows_here] for s in self._exp_avg]
        self._exp_avg_sq = [None if s is None else s[rows_here] for s in self._exp_avg_sq]
        self._derive()

    @torch.no_grad()
    def step(self, params: Sequence[torch.Tensor]) -> None:
        self.step_count += 1
        adam_step = None
        if self.kind is not Optimizer.SGD:
            # lr / (1 − β₁ᵗ) in double, rounded once: what `value=-step_size` does.
            adam_step = self._float32(-self.lr / (1 - self.betas[0] ** self.step_count))
        for i, p in enumerate(params):
            if p.grad is not None:
                self._update(i, p, p.grad, adam_step)

    def _decayed_grad(self, p: torch.Tensor, grad: torch.Tensor, i: int) -> torch.Tensor:
        """grad + wd·p per member (coupled L2); members with wd = 0 add exactly 0·p."""
        wd = self._wd[i]
        return grad if wd is None else torch.addcmul(grad, p, per_member(wd, p))

    def _update(
        self, i: int, p: torch.Tensor, grad: torch.Tensor, adam_step: torch.Tensor | None
    ) -> None:
        if self.kind is Optimizer.SGD:
            p.addcmul_(self._decayed_grad(p, grad, i), per_member(self._neg_lr, p))
            return
        assert adam_step is not None
        keep = self._adamw_keep[i]
        if self.kind is Optimizer.ADAMW:
            if keep is not None:
                p.mul_(per_member(keep, p))
        else:
            grad = self._decayed_grad(p, grad, i)
        exp_avg, exp_avg_sq = self._moments(i, p)
        beta1, beta2 = self.betas
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / (1 - beta2**self.step_count) ** 0.5).add_(self.eps)
        p.add_(exp_avg.mul(per_member(adam_step, p)).div_(denom))

    def _moments(self, i: int, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        exp_avg, exp_avg_sq = self._exp_avg[i], self._exp_avg_sq[i]
        if exp_avg is None or exp_avg_sq is None:
            exp_avg = self._exp_avg[i] = torch.zeros_like(p)
            exp_avg_sq = self._exp_avg_sq[i] = torch.zeros_like(p)
        return exp_avg, exp_avg_sq

"""Minimal SGD / Adam / AdamW with torch.optim's update rules.

Why not torch.optim: constructing the first torch.optim optimizer in a process imports
torch._dynamo, seconds paid by every worker and every `sweeps train`, and its per-step
dispatch costs more than the d2l model's whole step. These
classes implement the same single-tensor formulas (tests compare them to torch.optim) and
take `weight_decay` per parameter group, so only the penalized group decays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from trainer.config import Optimizer


@dataclass
class ParamGroup:
    params: list[torch.nn.Parameter]
    weight_decay: float = 0.0


@dataclass
class _AdamState:
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor


@dataclass
class FunctionalOptimizer:
    """`kind` decides the rule: SGD (no momentum), Adam (coupled L2), AdamW (decoupled)."""

    kind: Optimizer
    groups: list[ParamGroup]
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    step_count: int = 0
    _state: dict[int, _AdamState] = field(default_factory=dict)

    def zero_grad(self) -> None:
        for group in self.groups:
            for p in group.params:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.step_count += 1
        for group in self.groups:
            for p in group.params:
                if p.grad is not None:
                    self._update(p, p.grad, group.weight_decay)

    def _update(self, p: torch.Tensor, grad: torch.Tensor, wd: float) -> None:
        if self.kind is Optimizer.SGD:
            if wd != 0.0:
                grad = grad.add(p, alpha=wd)
            p.add_(grad, alpha=-self.lr)
            return
        if self.kind is Optimizer.ADAMW:
            p.mul_(1 - self.lr * wd)
        elif wd != 0.0:
            grad = grad.add(p, alpha=wd)
        state = self._state.get(id(p))
        if state is None:
            state = self._state[id(p)] = _AdamState(torch.zeros_like(p), torch.zeros_like(p))
        beta1, beta2 = self.betas
        state.exp_avg.lerp_(grad, 1 - beta1)
        state.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = self.lr / (1 - beta1**self.step_count)
        denom = (state.exp_avg_sq.sqrt() / (1 - beta2**self.step_count) ** 0.5).add_(self.eps)
        p.addcdiv_(state.exp_avg, denom, value=-step_size)

"""K members as one stacked model: their parameters as [K, ...] tensors and one forward.

`nn.Linear` (the d2l task) takes a hand-written forward made of the kernels the single
model runs (see trainer.batched for the equality it gives). Any other module runs
through `torch.func.functional_call` under `torch.vmap` over the stacked parameters and
buffers, with its `nn.Dropout`s drawing each member's masks from its seed's stream
(trainer.dropout). Whether a model can be stacked at all is trainer.stackable's call.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from trainer.batched_optim import PenaltyCoefficients, StackedOptimizer
from trainer.config import Penalty, TrialConfig
from trainer.dropout import DropoutMasks, seed_dropout
from trainer.penalties import select_penalized


class Forward(Protocol):
    """(stacked params and buffers, input [B, ...] shared by all members or [K, B, ...],
    shared?, each member's seed row [K]) → output [K, B, ...]; `train(mode)` switches
    training and evaluation behaviour (dropout)."""

    def __call__(
        self, tensors: dict[str, torch.Tensor], X: torch.Tensor, shared: bool, rows: torch.Tensor
    ) -> torch.Tensor: ...

    def train(self, mode: bool) -> None: ...


class LinearForward:
    """nn.Linear for K members: y = X·Wᵀ + b, as bmm(W, Xᵀ)ᵀ.

    This orientation makes MKL run, per member, the kernel `F.linear` runs on one model
    (for one output it is a gemv over the samples), so the sums round identically.
    """

    def train(self, mode: bool) -> None:
        del mode  # no behaviour differs between training and evaluation

    def __call__(
        self, tensors: dict[str, torch.Tensor], X: torch.Tensor, shared: bool, rows: torch.Tensor
    ) -> torch.Tensor:
        del rows
        W = tensors["weight"]
        n = X.shape[-2]
        if n == 1:
            # bmm sends a one-sample product to a naive loop that sums in another order; a
            # duplicated sample keeps it on the BLAS kernel the single model uses.
            X = torch.cat([X, X], dim=-2)
        Xt = X.t().expand(W.shape[0], -1, -1) if shared else X.transpose(1, 2)
        out = torch.bmm(W, Xt)[..., :n].transpose(1, 2)
        bias = tensors.get("bias")
        return out if bias is None else out + bias.unsqueeze(1)


Randomness = Literal["error", "same", "different"]


class VmapForward:
    """Any module: functional_call under vmap over the stacked parameters and buffers.

    Random draws inside the forward are an error (vmap's "error" randomness), except the
    seeded dropouts' own: their generators' draws are the same for every member (vmap's
    "same"), and each member picks its seed's draw by its row.
    """

    def __init__(self, template: nn.Module, masks: DropoutMasks | None) -> None:
        self.base = copy.deepcopy(template).to("meta")  # only its structure is used
        seeded = seed_dropout(self.base, masks)
        self.masks = masks
        self.randomness: Randomness = "same" if seeded and masks is not None else "error"

    def train(self, mode: bool) -> None:
        self.base.train(mode)

    def __call__(
        self, tensors: dict[str, torch.Tensor], X: torch.Tensor, shared: bool, rows: torch.Tensor
    ) -> torch.Tensor:
        masks, base = self.masks, self.base

        def one(t: dict[str, torch.Tensor], x: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
            if masks is not None:
                masks.rows = row
            out: torch.Tensor = functional_call(base, t, (x,))
            return out

        dims = (0, None if shared else 0, 0)
        vmapped = torch.vmap(one, in_dims=dims, randomness=self.randomness)
        out: torch.Tensor = vmapped(tensors, X, rows)
        return out


@dataclass
class Stack:
    """The live members' stacked tensors; row r is original member `members[r]`."""

    members: list[int]
    params: dict[str, torch.Tensor]  # leaves [K, ...] requiring grad
    buffers: dict[str, torch.Tensor]
    penalized: list[str]  # names the penalty and weight_decay cover, in model order
    coefs: PenaltyCoefficients
    optimizer: StackedOptimizer
    seed_rows: torch.Tensor  # [K] row of each member's seed (shuffle order, dropout masks)

    @property
    def weights(self) -> list[torch.Tensor]:
        return [self.params[n] for n in self.penalized]

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        return {**self.params, **self.buffers}

    def select(self, rows: list[int]) -> None:
        """Keep only `rows`: fresh leaves, so nothing of the dropped members remains."""
        index = torch.tensor(rows, dtype=torch.long, device=self.seed_rows.device)
        self.members = [self.members[r] for r in rows]
        self.params = {n: p.detach()[index].requires_grad_() for n, p in self.params.items()}
        self.buffers = {n: b[index] for n, b in self.buffers.items()}
        self.coefs = self.coefs.select(index)
        self.optimizer.select(rows)
        self.seed_rows = self.seed_rows[index]

    def snapshot(self, rows: list[int], keys: Sequence[str]) -> list[dict[str, torch.Tensor]]:
        """State dicts of `rows` on CPU, in the single model's key order (one copy per key)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.seed_rows.device)
        tensors = self.tensors
        moved = {k: tensors[k].detach()[index].cpu() for k in keys}
        # clone: each state dict must own its storage, not a view of the stacked one
        return [{k: moved[k][i].clone() for k in keys} for i in range(len(rows))]


def build_stack(
    cfgs: Sequence[TrialConfig],
    seeds: list[int],
    models: Sequence[nn.Module],
    device: torch.device,
) -> tuple[Stack, Forward, list[str]]:
    """The members' models (member k's from its own init stream) stacked; plus their
    forward and state-dict keys. `seeds` are the distinct seeds, in member order."""
    template = models[0]
    penalized = [n for n, _ in select_penalized(template.named_parameters(), cfgs[0].penalize)]
    stacked, buffers = stack_module_state(list(models))
    params = {n: p.detach().to(device).requires_grad_() for n, p in stacked.items()}
    stack = Stack(
        members=list(range(len(cfgs))),
        params=params,
        buffers={n: b.to(device) for n, b in buffers.items()},
        penalized=penalized,
        coefs=PenaltyCoefficients.of(cfgs, device),
        optimizer=_make_optimizer(cfgs, list(params), penalized, device),
        seed_rows=torch.tensor([seeds.index(cfg.seed) for cfg in cfgs], device=device),
    )
    forward: Forward
    if type(template) is nn.Linear:
        forward = LinearForward()
    else:
        forward = VmapForward(template, DropoutMasks(seeds, device))
    return stack, forward, list(template.state_dict())


def _make_optimizer(
    cfgs: Sequence[TrialConfig], names: list[str], penalized: list[str], device: torch.device
) -> StackedOptimizer:
    """Per-member lr; weight_decay λ on the penalized tensors of weight_decay members only."""
    decay = [cfg.lambda_ if cfg.penalty is Penalty.WEIGHT_DECAY else 0.0 for cfg in cfgs]
    wd = torch.tensor(decay, dtype=torch.float64) if any(decay) else None
    return StackedOptimizer(
        kind=cfgs[0].optimizer,
        lr=torch.tensor([cfg.lr for cfg in cfgs], dtype=torch.float64),
        weight_decay=[wd if n in penalized else None for n in names],
        device=device,
    )

"""Dropout whose masks come from the trial's own random stream, stacked or not.

`nn.Dropout` draws from torch's global generator, which is neither reproducible per
trial nor usable inside `torch.vmap` one member at a time. Both trainers therefore swap
every `nn.Dropout` of a model for `SeededDropout` (same p, no parameters or buffers, so
state dicts are unchanged), whose masks come from `DropoutMasks`: one generator per seed,
seeded from that seed's "dropout" stream, on the training device. A forward in training
mode draws, for each dropout call in call order, one uniform tensor of the input's shape
per seed and keeps an element where it is below 1 − p, scaled by 1/(1 − p) as
`F.dropout` does. The sequential trainer draws from its one seed's generator; a stack
draws the same tensors from each distinct seed's generator, and each member takes its
seed's (so members of one seed share masks, exactly as their sequential runs would, and
members of different seeds have independent ones). Evaluation runs in eval mode: no
draw, no mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trainer.seeding import stream_seed


class DropoutMasks:
    """The masks of one run: one generator per distinct seed. In a stack, `rows` holds
    each member's seed row while its forward runs (batched under vmap)."""

    def __init__(self, seeds: Sequence[int], device: torch.device) -> None:
        self.generators = [
            torch.Generator(device=device).manual_seed(stream_seed(s, "dropout")) for s in seeds
        ]
        self.device = device
        self.rows: torch.Tensor | None = None

    def keep(self, shape: torch.Size, p: float, dtype: torch.dtype) -> torch.Tensor:
        """The mask times 1/(1 − p) for an input of `shape` (per member, in a stack)."""
        q = 1.0 - p
        draws = [torch.rand(shape, generator=g, device=self.device) for g in self.generators]
        if len(draws) == 1:
            uniform = draws[0]
        else:
            assert self.rows is not None, "a stack of several seeds sets each member's row"
            uniform = torch.stack(draws)[self.rows]
        return (uniform < q).to(dtype) / q


class SeededDropout(nn.Module):
    """`nn.Dropout(p)` drawing from `masks`; with no masks (a probe run) it keeps all."""

    def __init__(self, p: float, masks: DropoutMasks | None) -> None:
        super().__init__()
        self.p = p
        self.masks = masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or self.masks is None:
            return x
        return x * self.masks.keep(x.shape, self.p, x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def seed_dropout(model: nn.Module, masks: DropoutMasks | None) -> int:
    """Swap every `nn.Dropout` of `model` (the class itself, not subclasses) for a
    `SeededDropout` drawing from `masks`; returns how many."""
    swaps = [
        (parent, name, child.p)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is nn.Dropout
    ]
    for parent, name, p in swaps:
        setattr(parent, name, SeededDropout(p, masks))
    return len(swaps)

"""Our optimizers must follow torch.optim's update rules."""

import pytest
import torch

from trainer.config import Optimizer
from trainer.optim import FunctionalOptimizer, ParamGroup


def _run(kind: Optimizer, wd: float, ours: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    decayed = torch.nn.Parameter(torch.randn(4, 3, generator=g))
    free = torch.nn.Parameter(torch.randn(3, generator=g))
    x = torch.randn(16, 4, generator=g)
    groups = [{"params": [decayed], "weight_decay": wd}, {"params": [free], "weight_decay": 0.0}]
    if ours:
        opt = FunctionalOptimizer(
            kind, [ParamGroup([decayed], wd), ParamGroup([free], 0.0)], lr=0.01
        )
    else:
        cls = {Optimizer.SGD: torch.optim.SGD, Optimizer.ADAM: torch.optim.Adam}
        opt = cls.get(kind, torch.optim.AdamW)(groups, lr=0.01)  # type: ignore[assignment]
    for _ in range(25):
        loss = ((x @ decayed + free).sin() ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [decayed.detach(), free.detach()]


@pytest.mark.parametrize("kind", list(Optimizer))
@pytest.mark.parametrize("wd", [0.0, 0.5])
def test_matches_torch_optim(kind: Optimizer, wd: float) -> None:
    for mine, theirs in zip(_run(kind, wd, True), _run(kind, wd, False), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7)

"""Whether a model can train in a stack, decided before any training.

A stack runs the model through `functional_call` under `vmap` (trainer.stacked_model),
which gives every member its own numbers only when the forward is a function of its
parameters, buffers and input. Refused, with the reason, are:
  - a module that keeps running statistics (`track_running_stats`: BatchNorm*, and
    InstanceNorm* with it set): its forward updates its buffers;
  - a forward that changes any buffer (found by running it once on two training rows);
  - a forward or backward that vmap cannot run: a random draw of its own (anything but
    an `nn.Dropout`, whose masks the trainer draws per seed), data-dependent Python
    control flow (`.item()`), an operation without a batching rule, ...
Such members train one by one with `trainer.train` instead (trainer.batched).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.func import stack_module_state

from trainer.dropout import seed_dropout
from trainer.stacked_model import VmapForward

PROBE_MEMBERS = 2


def refusal(model: nn.Module, rows: Callable[[], torch.Tensor]) -> str | None:
    """Why `model` cannot train in a stack, or None when it can. `rows()` gives a few
    rows of training input; `model` is left as it was."""
    if type(model) is nn.Linear:
        return None  # the hand-written path (trainer.stacked_model.LinearForward)
    for name, module in model.named_modules():
        if getattr(module, "track_running_stats", False) and list(module.buffers(False)):
            return f"{type(module).__name__} {name!r} updates its running statistics in forward"
    try:
        probe = copy.deepcopy(model).cpu()
    except Exception as e:  # a module holding what cannot be copied
        return f"the model cannot be copied ({_one_line(e)})"
    seed_dropout(probe, None)  # dropout keeps every element: the probe draws nothing
    sample = rows().cpu()
    return _changed_buffer(probe, sample) or _vmap_failure(probe, sample)


def _changed_buffer(model: nn.Module, sample: torch.Tensor) -> str | None:
    before = {n: b.clone() for n, b in model.named_buffers()}
    try:
        with torch.no_grad():
            model.train()(sample)
    except Exception as e:
        return f"its forward failed on two training rows ({_one_line(e)})"
    for name, buffer in model.named_buffers():
        if name not in before or not torch.equal(buffer, before[name]):
            return f"its forward changes the buffer {name!r}"
    return None


def _vmap_failure(model: nn.Module, sample: torch.Tensor) -> str | None:
    """A forward and backward of two stacked members, shared and per-member input, in
    training mode, then a forward in evaluation mode."""
    params, buffers = stack_module_state([model] * PROBE_MEMBERS)
    tensors = {**{n: p.detach().requires_grad_() for n, p in params.items()}, **buffers}
    forward = VmapForward(model, None)
    rows = torch.zeros(PROBE_MEMBERS, dtype=torch.long)
    batched = sample.expand(PROBE_MEMBERS, *sample.shape)
    try:
        forward.train(True)
        for X, shared in ((sample, True), (batched, False)):
            forward(tensors, X, shared, rows).float().sum().backward()  # type: ignore[no-untyped-call]
        forward.train(False)
        with torch.no_grad():
            forward(tensors, sample, True, rows)
    except Exception as e:
        return f"torch.vmap cannot run it ({_one_line(e)})"
    return None


def _one_line(e: BaseException) -> str:
    text = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    return f"{type(e).__name__}: {text}" if text else type(e).__name__

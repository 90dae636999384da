"""Model families for the tabular tasks: `linear` and `mlp`, built from task options.

Parameter names (what `--penalize` globs address):
  - `linear`: one `nn.Linear`, parameters `weight` and `bias` (it stays a plain nn.Linear so
    batched training keeps its exact path, see trainer.batched);
  - `mlp` with `--hidden 64,32`: `layers.0` (inputs → 64), `layers.1` (64 → 32) and
    `layers.2` (32 → outputs), each with `.weight` and `.bias`; the activation sits between
    layers and has no parameters. So `--penalize 'layers.0.weight'` penalizes the first
    layer only and `--penalize 'layers.*.weight'` is the same as the default `weights`.

Initialization is torch's default for nn.Linear, U(−1/√fan_in, 1/√fan_in) for weight and
bias, but drawn from the given generator so the init stream stays independent of the data.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from trainer.config import TaskOption
from trainer.errors import TaskError
from trainer.task_options import ACTIVATIONS as ACTIVATION_NAMES

ModelFactory = Callable[[torch.Generator], nn.Module]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = dict(
    zip(ACTIVATION_NAMES, (F.relu, torch.tanh, F.gelu), strict=True)
)


@dataclass(frozen=True)
class ModelSpec:
    kind: str = "linear"
    hidden: tuple[int, ...] = ()
    activation: str = "relu"


def model_spec(opts: Mapping[str, TaskOption], given: Mapping[str, TaskOption]) -> ModelSpec:
    """The model from resolved options; `--hidden`/`--activation` need `--model mlp`."""
    kind = str(opts["model"])
    if kind == "linear":
        extra = sorted(k for k in ("hidden", "activation") if k in given)
        if extra:
            raise TaskError(f"--{extra[0]} applies only to --model mlp")
        return ModelSpec()
    return ModelSpec("mlp", parse_hidden(str(opts["hidden"])), str(opts["activation"]))


MAX_WIDTH = 100_000  # a layer's width: far past a tabular MLP, short of an allocation error


def parse_hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1 or max(widths) > MAX_WIDTH:
        raise TaskError(
            f"--hidden needs comma-separated widths in [1, {MAX_WIDTH}], e.g. 64,32; got {text!r}"
        )
    return widths


class MLP(nn.Module):
    """Linear layers `layers.0 … layers.N` with the activation between them."""

    def __init__(self, sizes: Sequence[int], activation: str) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Linear(a, b, device="meta") for a, b in itertools.pairwise(sizes)
        )
        self.activation_name = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = ACTIVATIONS[self.activation_name]
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = act(x)
        return x


def _init_linear(layer: nn.Linear, gen: torch.Generator) -> None:
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        for p in (layer.weight, layer.bias):
            p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=gen))


def make_model_factory(spec: ModelSpec, n_inputs: int, n_outputs: int) -> ModelFactory:
    """`make_model(generator)` for a task with `n_inputs` features and `n_outputs` outputs."""

    def make_model(gen: torch.Generator) -> nn.Module:
        model: nn.Module
        if spec.kind == "linear":
            model = nn.Linear(n_inputs, n_outputs, device="meta")
        else:
            model = MLP([n_inputs, *spec.hidden, n_outputs], spec.activation)
        model = model.to_empty(device="cpu")  # meta first: no draw from the global RNG
        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                _init_linear(layer, gen)
        return model

    return make_model

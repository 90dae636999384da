"""Model families for the tabular tasks: `linear`, `mlp` and `cnn`, built from task options.

Parameter names (what `--penalize` globs address):
  - `linear`: one `nn.Linear`, parameters `weight` and `bias` (it stays a plain nn.Linear so
    batched training keeps its exact path, see trainer.batched);
  - `mlp` with `--hidden 64,32`: `layers.0` (inputs → 64), `layers.1` (64 → 32) and
    `layers.2` (32 → outputs), each with `.weight` and `.bias`; the activation (and with
    `--dropout P` an `nn.Dropout(P)`) sits between layers and has no parameters. So
    `--penalize 'layers.0.weight'` penalizes the first layer only and
    `--penalize 'layers.*.weight'` is the same as the default `weights`;
  - `cnn` (image tasks: each row is a C×H×W image, digits' 1×8×8) with `--hidden 8,16`
    (the default): `convs.0` (C → 8 channels) and `convs.1` (8 → 16), 3×3 convolutions
    with padding 1, each followed by the activation, all but the first with stride 2 (it
    halves the image: 8×8 → 4×4); `--dropout P`; and `head`, the linear layer from the
    last feature maps to the outputs. A strided convolution rather than max-pooling: no
    argmax ties on the images' constant borders, whose choice a rounding difference
    would flip (stacked and sequential training would part ways).

Initialization is torch's default for nn.Linear and nn.Conv2d, U(−1/√fan_in, 1/√fan_in)
for weight and bias, but drawn from the given generator so the init stream stays
independent of the data.
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


CNN_CHANNELS = (8, 16)  # `--model cnn` without `--hidden`: small enough to stack by the 64
Image = tuple[int, int, int]  # channels, height, width of an image task's rows


@dataclass(frozen=True)
class ModelSpec:
    kind: str = "linear"
    hidden: tuple[int, ...] = ()
    activation: str = "relu"
    dropout: float = 0.0


def model_spec(opts: Mapping[str, TaskOption], given: Mapping[str, TaskOption]) -> ModelSpec:
    """The model from resolved options; `--hidden`/`--activation`/`--dropout` need
    `--model mlp` or `cnn`."""
    kind = str(opts["model"])
    if kind == "linear":
        extra = sorted(k for k in ("hidden", "activation", "dropout") if k in given)
        if extra:
            raise TaskError(f"--{extra[0]} applies only to --model mlp or cnn")
        return ModelSpec()
    hidden = parse_hidden(str(opts["hidden"]))
    if kind == "cnn" and "hidden" not in given:
        hidden = CNN_CHANNELS
    return ModelSpec(kind, hidden, str(opts["activation"]), float(opts["dropout"]))


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


def _dropout(p: float) -> nn.Module:
    return nn.Dropout(p) if p > 0 else nn.Identity()


class MLP(nn.Module):
    """Linear layers `layers.0 … layers.N` with the activation (and dropout) between them."""

    def __init__(self, sizes: Sequence[int], activation: str, dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Linear(a, b, device="meta") for a, b in itertools.pairwise(sizes)
        )
        self.activation_name = activation
        self.dropout = _dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = ACTIVATIONS[self.activation_name]
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.dropout(act(x))
        return x


class CNN(nn.Module):
    """3×3 convolutions `convs.0 … convs.N` (padding 1; stride 2 after the first) with
    the activation after each, dropout, and the linear `head`. Input rows are flat
    images."""

    def __init__(
        self,
        image: Image,
        channels: Sequence[int],
        n_outputs: int,
        activation: str,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        c, h, w = image
        self.image = image
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, 3, stride=1 if i == 0 else 2, padding=1, device="meta")
            for i, (a, b) in enumerate(itertools.pairwise([c, *channels]))
        )
        for _ in channels[1:]:
            h, w = (h + 1) // 2, (w + 1) // 2
        self.dropout = _dropout(dropout)
        self.head = nn.Linear(channels[-1] * h * w, n_outputs, device="meta")
        self.activation_name = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = ACTIVATIONS[self.activation_name]
        x = x.reshape(-1, *self.image)
        for conv in self.convs:
            x = act(conv(x))
        out: torch.Tensor = self.head(self.dropout(x.flatten(1)))
        return out


def _init_uniform(layer: nn.Linear | nn.Conv2d, gen: torch.Generator) -> None:
    fan_in = layer.weight[0].numel()  # inputs (× kernel size) of one output
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        for p in (layer.weight, layer.bias):
            if p is not None:
                p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=gen))


def make_model_factory(
    spec: ModelSpec, n_inputs: int, n_outputs: int, image: Image | None = None
) -> ModelFactory:
    """`make_model(generator)` for a task with `n_inputs` features and `n_outputs` outputs;
    `image` (channels, height, width) is the shape of an image task's rows, which `cnn`
    needs."""
    if spec.kind == "cnn" and (image is None or math.prod(image) != n_inputs):
        raise TaskError("--model cnn needs image inputs: use it with the digits task (8×8)")

    def make_model(gen: torch.Generator) -> nn.Module:
        model: nn.Module
        if spec.kind == "linear":
            model = nn.Linear(n_inputs, n_outputs, device="meta")
        elif spec.kind == "cnn":
            assert image is not None
            model = CNN(image, spec.hidden, n_outputs, spec.activation, spec.dropout)
        else:
            model = MLP([n_inputs, *spec.hidden, n_outputs], spec.activation, spec.dropout)
        model = model.to_empty(device="cpu")  # meta first: no draw from the global RNG
        for layer in model.modules():
            if isinstance(layer, nn.Linear | nn.Conv2d):
                _init_uniform(layer, gen)
        return model

    return make_model

"""The d2l "weight decay" experiment: high-dimensional linear regression, few examples.

y = X·w + b + ε with w = 0.01·1, b = 0.05, ε ~ N(0, noise²); the model is linreg with
w ~ N(0, 1), b = 0; squared loss. The book has no validation split and reports the test
loss, so `val_is_test` is set and the objective uses the test split, as the book does.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from trainer import task_options
from trainer.config import TaskOption
from trainer.models import make_model_factory, model_spec
from trainer.seeding import stream_generator
from trainer.tasks.base import Split, Task, resolve_options, squared_loss

NAME = task_options.D2L
OPTIONS = task_options.D2L_OPTIONS

TRUE_W = 0.01
TRUE_B = 0.05


def synthetic_data(w: torch.Tensor, b: float, n: int, noise: float, gen: torch.Generator) -> Split:
    """d2l.synthetic_data with an explicit generator."""
    X = torch.normal(0.0, 1.0, (n, w.numel()), generator=gen)
    y = X @ w.reshape(-1, 1) + b
    y += torch.normal(0.0, noise, y.shape, generator=gen) if noise > 0 else 0.0
    return Split(X, y)


def build(options: Mapping[str, TaskOption], data_seed: int, split_seed: int | None) -> Task:
    del split_seed  # the data is drawn from data_seed, not split from a table
    opts = resolve_options(NAME, OPTIONS, options)
    num_inputs = int(opts["num_inputs"])
    gen = stream_generator(data_seed, "data")
    true_w = torch.full((num_inputs,), TRUE_W)
    train = synthetic_data(true_w, TRUE_B, int(opts["n_train"]), float(opts["noise"]), gen)
    test = synthetic_data(true_w, TRUE_B, int(opts["n_test"]), float(opts["noise"]), gen)

    spec = model_spec(opts, options)
    if spec.kind != "linear":
        mlp = make_model_factory(spec, num_inputs, 1)
        return Task(NAME, train, test, test, mlp, squared_loss, val_is_test=True)

    def make_model(init: torch.Generator) -> nn.Module:
        model = nn.Linear(num_inputs, 1)
        with torch.no_grad():
            model.weight.copy_(torch.normal(0.0, 1.0, model.weight.shape, generator=init))
            model.bias.zero_()
        return model

    return Task(NAME, train, test, test, make_model, squared_loss, val_is_test=True)

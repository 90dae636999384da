"""linear / mlp models: layer names for --penalize, init from the init stream only, and
batched MLP training agreeing with sequential training (trainer.batched's tolerance)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from trainer import ConfigError, TaskError, TrialConfig, train
from trainer.batched import train_batch
from trainer.penalties import select_penalized
from trainer.tasks import load_task

MLP = (("model", "mlp"), ("hidden", "16,8"), ("activation", "tanh"))


def test_mlp_layer_names_and_penalize_globs() -> None:
    task = load_task(TrialConfig(task="digits", task_options=MLP))
    model = task.make_model(torch.Generator().manual_seed(1))
    names = [n for n, _ in model.named_parameters()]
    assert names == [f"layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")]
    assert [p.shape[0] for n, p in model.named_parameters() if n.endswith("bias")] == [16, 8, 10]
    first = select_penalized(model.named_parameters(), "layers.0.weight")
    assert [n for n, _ in first] == ["layers.0.weight"]
    default = select_penalized(model.named_parameters(), "weights")
    assert [n for n, _ in default] == [
        n for n, _ in select_penalized(model.named_parameters(), "layers.*.weight")
    ]
    linear = load_task(TrialConfig(task="diabetes")).make_model(torch.Generator())
    assert [n for n, _ in linear.named_parameters()] == ["weight", "bias"]
    with pytest.raises(ConfigError, match="matches no parameter"):
        select_penalized(linear.named_parameters(), "layers.0.weight")


def test_init_comes_from_the_generator_only() -> None:
    task = load_task(TrialConfig(task="digits", task_options=MLP))
    a = task.make_model(torch.Generator().manual_seed(5)).state_dict()
    torch.manual_seed(123)  # the global RNG must not matter
    b = task.make_model(torch.Generator().manual_seed(5)).state_dict()
    c = task.make_model(torch.Generator().manual_seed(6)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["layers.0.weight"], c["layers.0.weight"])
    bound = 1 / 64**0.5  # torch's default nn.Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert 0.9 * bound < a["layers.0.weight"].abs().max() <= bound


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ((("hidden", "32"),), "--hidden applies only to --model mlp or cnn"),
        ((("dropout", 0.5),), "--dropout applies only to --model mlp or cnn"),
        ((("model", "mlp"), ("hidden", "32,x")), "--hidden needs comma-separated widths"),
        ((("model", "mlp"), ("activation", "swish")), "activation must be one of"),
        ((("model", "rnn"),), "model must be one of"),
        ((("model", "cnn"), ("dropout", 1.0)), "dropout must be < 1"),
    ],
)
def test_bad_model_options(options: tuple[tuple[str, str], ...], fragment: str) -> None:
    with pytest.raises(TaskError, match=fragment):
        load_task(TrialConfig(task="digits", task_options=options))


def test_cnn_layer_names_shapes_and_init() -> None:
    task = load_task(TrialConfig(task="digits", task_options=(("model", "cnn"),)))
    model = task.make_model(torch.Generator().manual_seed(1))
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes == {
        "convs.0.weight": (8, 1, 3, 3),
        "convs.0.bias": (8,),
        "convs.1.weight": (16, 8, 3, 3),
        "convs.1.bias": (16,),
        "head.weight": (10, 16 * 4 * 4),
        "head.bias": (10,),
    }
    assert model(torch.zeros(5, 64)).shape == (5, 10)
    weights = select_penalized(model.named_parameters(), "weights")
    assert [n for n, _ in weights] == ["convs.0.weight", "convs.1.weight", "head.weight"]
    bound = 1 / (8 * 9) ** 0.5  # torch's default conv init: fan_in = channels × kernel
    assert 0.9 * bound < model.convs[1].weight.abs().max() <= bound  # type: ignore[index]
    wider = load_task(
        TrialConfig(task="digits", task_options=(("model", "cnn"), ("hidden", "4,6,12")))
    ).make_model(torch.Generator())
    assert [tuple(c.weight.shape[:2]) for c in wider.convs] == [(4, 1), (6, 4), (12, 6)]  # type: ignore[union-attr]
    assert wider(torch.zeros(2, 64)).shape == (2, 10)  # 8×8 → 4×4 → 2×2


@pytest.mark.parametrize("task", ["diabetes", "d2l-synthetic"])
def test_cnn_needs_an_image_task(task: str) -> None:
    with pytest.raises(TaskError, match="--model cnn needs image inputs"):
        load_task(TrialConfig(task=task, task_options=(("model", "cnn"),)))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_batched_mlp_agrees_with_sequential(optimizer: str) -> None:
    """Non-Linear modules take the vmap path: agreement within rtol 1e-5, atol 1e-6
    (trainer.batched's documented tolerance) on histories, weights and accuracy."""
    base = TrialConfig(
        task="digits",
        task_options=MLP,
        optimizer=optimizer,
        lr=0.05 if optimizer == "sgd" else 0.005,
        batch_size=128,
        epochs=4,
        device="cpu",
    )
    cfgs = [
        base.replace(penalty="none"),
        base.replace(penalty="l2", lambda_=1e-3, seed=1, data_seed=0),
        base.replace(penalty="weight_decay", lambda_=1e-2, lr=base.lr / 2),
    ]
    task = load_task(base)
    batched = train_batch(cfgs, task, device=torch.device("cpu"))
    for cfg, bat in zip(cfgs, batched, strict=True):
        seq = train(cfg, task)
        assert (bat.status, bat.epochs_run) == (seq.status, seq.epochs_run)
        for name, values in seq.history.items():
            torch.testing.assert_close(bat.history[name], values, rtol=1e-5, atol=1e-6)
        for name, tensor in seq.state_dict.items():
            torch.testing.assert_close(bat.state_dict[name], tensor, rtol=1e-5, atol=1e-6)
        assert (
            bat.accuracy.keys()
            == seq.accuracy.keys()
            == {"train_accuracy", "val_accuracy", "test_accuracy"}
        )
        for name, value in seq.accuracy.items():
            assert bat.accuracy[name] == pytest.approx(value, abs=1.5 / len(task.train))


@pytest.mark.parametrize("first", ["trainer.models", "trainer.tasks", "trainer.config"])
def test_each_public_module_imports_first(first: str) -> None:
    """The README's python: task example starts with `from trainer.models import ...`; in a
    fresh process that must not run into an import cycle with trainer.tasks."""
    done = subprocess.run(
        [sys.executable, "-c", f"import {first}"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr

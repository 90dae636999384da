"""Standard modules in a stack: what vmap can run stacks and equals `train` member by
member (trainer.batched's tolerance, rtol 1e-5 / atol 1e-6); dropout draws each seed's
own masks in both; what cannot be stacked (BatchNorm, a forward vmap refuses) trains one
by one in the same call, with one log line, giving `train`'s very numbers."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import pytest
import torch
from torch import nn

from trainer import TrainStatus, TrialConfig, TrialResult, train
from trainer.batched import train_batch
from trainer.stackable import refusal
from trainer.tasks import Split, Task, cross_entropy_loss, load_task

CPU = torch.device("cpu")
CNN = (("model", "cnn"), ("dropout", 0.25))
LOGGER = "trainer.batched"


def assert_close(seq: TrialResult, bat: TrialResult) -> None:
    assert (bat.status, bat.epochs_run) == (seq.status, seq.epochs_run), seq.config
    for name, values in seq.history.items():
        torch.testing.assert_close(bat.history[name], values, rtol=1e-5, atol=1e-6)
    assert list(bat.state_dict) == list(seq.state_dict)
    for name, tensor in seq.state_dict.items():
        torch.testing.assert_close(bat.state_dict[name], tensor, rtol=1e-5, atol=1e-6)
    assert bat.accuracy.keys() == seq.accuracy.keys()
    for name, value in seq.accuracy.items():
        assert bat.accuracy[name] == pytest.approx(value, abs=1e-3)  # one row in ~360


def assert_identical(seq: TrialResult, bat: TrialResult) -> None:
    assert (bat.status, bat.epochs_run, bat.history) == (seq.status, seq.epochs_run, seq.history)
    for name, tensor in seq.state_dict.items():
        assert torch.equal(bat.state_dict[name], tensor), name


def _stacked_and_sequential(
    cfgs: Sequence[TrialConfig], task: Task
) -> list[tuple[TrialResult, TrialResult]]:
    batched = train_batch(cfgs, task, device=CPU)
    return [(train(cfg, task, device=CPU), bat) for cfg, bat in zip(cfgs, batched, strict=True)]


@pytest.fixture(scope="module")
def digits_cnn() -> Task:
    return load_task(TrialConfig(task="digits", task_options=CNN))


def test_the_digits_cnn_stacked_equals_sequential(
    digits_cnn: Task, caplog: pytest.LogCaptureFixture
) -> None:
    """The bundled CNN with dropout: penalties on the tensors a glob names (conv weights
    and biases, the head's weight), two seeds (own shuffles and masks), a weight_decay
    member; stacked, not one by one."""
    base = TrialConfig(
        task="digits",
        task_options=CNN,
        lr=0.05,
        batch_size=128,
        epochs=3,
        penalize="convs.*,head.weight",
    )
    cfgs = [
        base.replace(penalty="none"),
        base.replace(penalty="l2", lambda_=1e-3, seed=1, data_seed=0),
        base.replace(penalty="l1", lambda_=1e-4),
        base.replace(penalty="weight_decay", lambda_=1e-2, lr=0.02),
    ]
    with caplog.at_level(logging.INFO, logger=LOGGER):
        pairs = _stacked_and_sequential(cfgs, digits_cnn)
    assert not caplog.records
    for seq, bat in pairs:
        assert_close(seq, bat)
    assert pairs[0][0].accuracy["val_accuracy"] > 0.5  # it learns
    assert pairs[0][0].history != pairs[1][0].history  # another seed, other masks


class Mixed(nn.Module):
    """Embedding, Conv1d, LayerNorm, GELU, Dropout and Linear over token rows."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(12, 6)
        self.conv = nn.Conv1d(6, 5, 3, padding=1)
        self.norm = nn.LayerNorm(5)
        self.drop = nn.Dropout(0.3)
        self.out = nn.Linear(5 * 8, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.embed(tokens).transpose(1, 2)).transpose(1, 2)
        return self.out(self.drop(nn.functional.gelu(self.norm(x))).flatten(1))


def _token_task(make: Callable[[], nn.Module]) -> Task:
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 12, (90, 8), generator=gen)
    labels = (tokens[:, 0] % 3).long()
    splits = [Split(tokens[i : i + 30], labels[i : i + 30]) for i in (0, 30, 60)]

    def make_model(init: torch.Generator) -> nn.Module:
        with torch.random.fork_rng():  # torch's own init draws from the global generator
            model = make()
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=init) * 0.3)
        return model

    return Task(
        "tokens", *splits, make_model=make_model, loss=cross_entropy_loss, classification=True
    )


def test_embedding_conv1d_layernorm_dropout_stack(caplog: pytest.LogCaptureFixture) -> None:
    task = _token_task(Mixed)
    base = TrialConfig(task="tokens", optimizer="adam", lr=0.01, batch_size=7, epochs=6)
    cfgs = [
        base.replace(penalty=p, lambda_=1e-2, seed=s, data_seed=0, penalize="all")
        for s, p in ((0, "l2"), (1, "l1"), (2, "weight_decay"))
    ]
    with caplog.at_level(logging.INFO, logger=LOGGER):
        pairs = _stacked_and_sequential(cfgs, task)
    assert not caplog.records
    for seq, bat in pairs:
        assert_close(seq, bat)


def test_dropout_masks_are_the_seeds_own_and_leave_torchs_generator_alone() -> None:
    task = _token_task(Mixed)
    cfg = TrialConfig(task="tokens", lr=0.1, batch_size=10, epochs=3)
    state = torch.random.get_rng_state()
    first, again = train(cfg, task, device=CPU), train(cfg, task, device=CPU)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first.history == again.history
    without = dataclasses.replace(task, make_model=_no_dropout(task.make_model))
    assert train(cfg, without, device=CPU).history != first.history  # masks were drawn


def _no_dropout(make: Callable[[torch.Generator], nn.Module]) -> Callable[..., nn.Module]:
    def make_model(init: torch.Generator) -> nn.Module:
        model = make(init)
        model.drop = nn.Identity()  # type: ignore[assignment]
        return model

    return make_model


# --- what cannot be stacked trains one by one ------------------------------------------


class WithBatchNorm(nn.Module):
    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.embed = nn.Embedding(12, 4)
        self.norm = norm
        self.out = nn.Linear(4 * 8, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens).transpose(1, 2)  # [B, 4, 8]
        return self.out(self.norm(x).flatten(1))


class ItemInForward(nn.Module):
    """Data-dependent Python control flow: vmap cannot run it."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(12, 3)
        self.out = nn.Linear(3 * 8, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens).flatten(1)
        return self.out(x if x.sum().item() > 0 else -x)


class OwnNoise(nn.Module):
    """A random draw of its own (not an nn.Dropout): not reproducible per member."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(12, 3)
        self.out = nn.Linear(3 * 8, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens).flatten(1)
        return self.out(x + 0.01 * torch.rand_like(x) if self.training else x)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: WithBatchNorm(nn.BatchNorm1d(4)), "BatchNorm1d 'norm' updates its running"),
        (
            lambda: WithBatchNorm(nn.InstanceNorm1d(4, track_running_stats=True)),
            "InstanceNorm1d 'norm' updates its running",
        ),
        (ItemInForward, "torch.vmap cannot run it"),
    ],
    ids=["batchnorm", "instancenorm", "item"],
)
def test_what_cannot_stack_trains_one_by_one_with_trains_numbers(
    make: Callable[[], nn.Module], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    task = _token_task(make)
    base = TrialConfig(task="tokens", lr=0.05, batch_size=10, epochs=4)
    cfgs = [
        base.replace(penalty="l2", lambda_=lam, seed=s, data_seed=0)
        for s, lam in ((0, 0.0), (1, 0.1), (0, 1.0))
    ]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        pairs = _stacked_and_sequential(cfgs, task)
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [
        caplog.records[0].getMessage()
    ]
    assert "3 members of a stack train one by one" in caplog.records[0].getMessage()
    assert reason in caplog.records[0].getMessage()
    for seq, bat in pairs:
        assert_identical(seq, bat)


def test_a_forward_drawing_its_own_noise_is_refused() -> None:
    model = OwnNoise()
    tokens = torch.zeros(2, 8, dtype=torch.long)
    assert "torch.vmap cannot run it" in str(refusal(model, lambda: tokens))
    assert refusal(Mixed(), lambda: tokens) is None
    assert refusal(nn.Linear(3, 1), lambda: pytest.fail("not read for nn.Linear")) is None


def test_members_trained_one_by_one_are_still_pruned_at_checkpoints() -> None:
    task = _token_task(lambda: WithBatchNorm(nn.BatchNorm1d(4)))
    cfgs = [
        TrialConfig(task="tokens", lr=0.05, batch_size=10, epochs=6, seed=s, data_seed=0)
        for s in (0, 1)
    ]
    seen: list[tuple[int, list[int]]] = []

    def prune_one(epoch: int, members: list[int], metrics: torch.Tensor) -> set[int]:
        assert metrics.shape == (len(members), 5)
        seen.append((epoch, members))
        return {1} if epoch == 4 else set()

    results = train_batch(cfgs, task, prune_one, device=CPU, every=2)
    assert [r.status for r in results] == [TrainStatus.COMPLETED, TrainStatus.STOPPED]
    assert results[1].epochs_run == 4
    assert seen == [(2, [0]), (4, [0]), (6, [0]), (2, [1]), (4, [1])]

"""Batched training must reproduce the sequential trainer member by member.

On the d2l task (nn.Linear) the batched arithmetic is the sequential one, so on the CPU
build it was verified with (MKL, AVX2) histories and weights must be bit-identical; on any
other build the documented tolerance of trainer.batched applies instead.

Run this file directly for the timing table: `.venv/bin/python tests/trainer/test_batched.py`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import pytest
import torch
from torch import nn

from trainer import ConfigError, Penalty, TrainStatus, TrialConfig, TrialResult, train
from trainer.batched import batch_key, stack_key, train_batch
from trainer.config import Optimizer
from trainer.tasks import Task, load_task

CPU = torch.device("cpu")
PENALTIES = [p.value for p in Penalty]
LAMBDAS = [0.0, 1e-3, 0.1, 3.0, 30.0]
# Where bit-identity was measured; elsewhere BLAS may sum in another order.
EXACT = torch.backends.mkl.is_available() and torch.backends.cpu.get_cpu_capability() == "AVX2"
# A non-smooth penalty under Adam's normalized steps turns one rounding difference into
# another trajectory near the kink, so no elementwise tolerance holds for these.
NON_SMOOTH = {Penalty.L1, Penalty.ELASTIC_NET, Penalty.L2_UNSQUARED}


@pytest.fixture(scope="module")
def d2l() -> Task:
    return load_task(TrialConfig())


def _sequential(cfgs: Sequence[TrialConfig], task: Task) -> list[TrialResult]:
    return [train(cfg, task, device=CPU) for cfg in cfgs]


def assert_matches(seq: TrialResult, bat: TrialResult, exact: bool) -> None:
    """`bat` is `seq`: same outcome, and the same numbers (bit-identical when `exact`)."""
    assert bat.config == seq.config
    assert (bat.status, bat.diverged_epoch, bat.epochs_run) == (
        seq.status,
        seq.diverged_epoch,
        seq.epochs_run,
    ), seq.config
    assert list(bat.state_dict) == list(seq.state_dict)
    if exact:
        assert bat.history == seq.history, seq.config
        for name, tensor in seq.state_dict.items():  # zero tolerance; a diverged inf is inf
            torch.testing.assert_close(bat.state_dict[name], tensor, rtol=0, atol=0, equal_nan=True)
        return
    cfg = seq.config
    if cfg.optimizer is not Optimizer.SGD and cfg.penalty in NON_SMOOTH and cfg.lambda_ > 0:
        return  # chaotic under rounding: the outcome above is all that is comparable
    if seq.status is TrainStatus.DIVERGED:
        return  # each step multiplies the rounding difference: the same epoch is the match
    for metric, values in seq.history.items():
        torch.testing.assert_close(bat.history[metric], values, rtol=1e-5, atol=1e-6)
    for name, tensor in seq.state_dict.items():
        torch.testing.assert_close(bat.state_dict[name], tensor, rtol=1e-5, atol=1e-6)


def _assert_all_match(cfgs: Sequence[TrialConfig], task: Task, exact: bool = EXACT) -> None:
    batched = train_batch(cfgs, task, device=CPU)
    for seq, bat in zip(_sequential(cfgs, task), batched, strict=True):
        assert_matches(seq, bat, exact)


def _mixed(optimizer: str, lrs: Sequence[float], **common: object) -> list[TrialConfig]:
    """Every penalty × every λ, three seeds on one dataset, alternating learning rates."""
    grid = itertools.product(PENALTIES, LAMBDAS)
    return [
        TrialConfig(
            penalty=penalty,
            lambda_=lam,
            l1_ratio=(0.2, 0.5, 0.9)[i % 3] if penalty == "elastic_net" else None,
            optimizer=optimizer,
            lr=lrs[i % len(lrs)],
            seed=i % 3,
            data_seed=0,
            **common,  # type: ignore[arg-type]
        )
        for i, (penalty, lam) in enumerate(grid)
    ]


@pytest.mark.parametrize(
    ("optimizer", "lrs"),
    [("sgd", (0.003, 0.001, 0.01)), ("adam", (0.01, 0.003)), ("adamw", (0.01, 0.1))],
)
def test_mixed_batch_equals_sequential(d2l: Task, optimizer: str, lrs: Sequence[float]) -> None:
    _assert_all_match(_mixed(optimizer, lrs), d2l)


def test_diverging_members_diverge_at_the_same_epoch_and_spare_the_others(d2l: Task) -> None:
    cfgs = [
        TrialConfig(lr=5.0, epochs=50, data_seed=0),  # diverges at epoch 3
        TrialConfig(penalty="l2", lambda_=3, epochs=50, data_seed=0),
        TrialConfig(penalty="l1", lambda_=0.1, lr=0.01, seed=2, epochs=50, data_seed=0),
        TrialConfig(penalty="weight_decay", lambda_=1, lr=0.5, seed=1, epochs=50, data_seed=0),
    ]
    results = train_batch(cfgs, d2l, device=CPU)
    assert [r.status for r in results] == [
        TrainStatus.DIVERGED,
        TrainStatus.COMPLETED,
        TrainStatus.COMPLETED,
        TrainStatus.DIVERGED,
    ]
    first, last = results[0].diverged_epoch, results[3].diverged_epoch
    assert first is not None and last is not None and first < last < 50
    for diverged in (results[0], results[3]):
        assert all(math.isfinite(v) for vs in diverged.history.values() for v in vs)
    for seq, bat in zip(_sequential(cfgs, d2l), results, strict=True):
        assert_matches(seq, bat, EXACT)


def test_pruned_member_stops_at_the_requested_epoch(d2l: Task) -> None:
    cfgs = [TrialConfig(penalty="l2", lambda_=lam, epochs=12, data_seed=0) for lam in (0, 1, 3)]
    seen: list[tuple[int, list[int]]] = []

    def prune_member_one_at_epoch_four(
        epoch: int, members: list[int], metrics: torch.Tensor
    ) -> set[int] | None:
        assert metrics.shape == (len(members), 5) and metrics.device.type == "cpu"
        seen.append((epoch, members))
        return {1} if epoch == 4 else None

    results = train_batch(cfgs, d2l, prune_member_one_at_epoch_four, device=CPU)
    assert [r.status for r in results] == [
        TrainStatus.COMPLETED,
        TrainStatus.STOPPED,
        TrainStatus.COMPLETED,
    ]
    assert seen[3] == (4, [0, 1, 2]) and seen[4] == (5, [0, 2])
    assert len(seen) == 12 and results[1].epochs_run == 4
    stopped_alone = train(cfgs[1], d2l, on_epoch=lambda epoch, _: epoch == 4, device=CPU)
    assert_matches(stopped_alone, results[1], EXACT)
    for seq, bat in zip(_sequential(cfgs[::2], d2l), results[::2], strict=True):
        assert_matches(seq, bat, EXACT)


def test_checkpoints_see_the_metrics_train_records(d2l: Task) -> None:
    """Called every `every` epochs only, with each live member's metrics of that epoch."""
    cfgs = [TrialConfig(penalty="l2", lambda_=lam, epochs=10, data_seed=0) for lam in (0, 3)]
    seen: dict[int, torch.Tensor] = {}

    def remember(epoch: int, members: list[int], metrics: torch.Tensor) -> None:
        assert members == [0, 1]
        seen[epoch] = metrics.clone()

    results = train_batch(cfgs, d2l, remember, device=CPU, every=4)
    assert sorted(seen) == [4, 8]
    for epoch, metrics in seen.items():
        for member, result in enumerate(results):
            expected = [result.history[m][epoch - 1] for m in result.history]
            assert metrics[member].tolist() == expected


def test_a_checkpoint_may_not_stop_a_member_that_diverged_this_epoch(d2l: Task) -> None:
    cfgs = [TrialConfig(lr=5.0, epochs=10, data_seed=0), TrialConfig(epochs=10, data_seed=0)]
    offered: list[list[int]] = []

    def stop_all(epoch: int, members: list[int], metrics: torch.Tensor) -> set[int]:
        offered.append(members)
        assert torch.isfinite(metrics).all()
        return {0, 1} if epoch == 3 else set()

    results = train_batch(cfgs, d2l, stop_all, device=CPU)
    assert offered[:2] == [[0, 1], [0, 1]] and offered[2] == [1]  # 0 diverged at epoch 3
    assert [r.status for r in results] == [TrainStatus.DIVERGED, TrainStatus.STOPPED]
    assert (results[0].diverged_epoch, results[0].epochs_run, results[1].epochs_run) == (3, 2, 3)


def test_all_members_stopping_ends_the_batch(d2l: Task) -> None:
    cfgs = [TrialConfig(epochs=50), TrialConfig(epochs=50, penalty="l1", lambda_=1)]
    epochs: list[int] = []

    def stop_everything(epoch: int, members: list[int], metrics: torch.Tensor) -> set[int]:
        epochs.append(epoch)
        return {0, 1} if epoch == 2 else set()

    results = train_batch(cfgs, d2l, stop_everything, device=CPU)
    assert epochs == [1, 2] and all(r.status is TrainStatus.STOPPED for r in results)


def test_checkpoint_interval_must_be_positive(d2l: Task) -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        train_batch([TrialConfig()], d2l, every=0)


@pytest.mark.parametrize("scope", ["bias", "weight,bias", "all", "weigh*"])
def test_penalize_scope(d2l: Task, scope: str) -> None:
    cfgs = [
        TrialConfig(penalty=p, lambda_=1.0, penalize=scope, epochs=30, seed=s, data_seed=0)
        for s, p in enumerate(["l1", "l2", "l2_unsquared", "elastic_net", "weight_decay"])
    ]
    _assert_all_match(cfgs, d2l)


@pytest.mark.parametrize("batch_size", [0, 1, 3])
def test_full_batch_and_ragged_minibatches(d2l: Task, batch_size: int) -> None:
    cfgs = [
        TrialConfig(penalty=p, lambda_=0.5, batch_size=batch_size, epochs=20, seed=s, data_seed=0)
        for s, p in enumerate(["none", "l2", "elastic_net", "weight_decay"])
    ]
    _assert_all_match(cfgs, d2l)


def test_results_carry_config_device_duration_and_own_weights(d2l: Task) -> None:
    cfgs = [TrialConfig(epochs=3), TrialConfig(epochs=3, penalty="l2", lambda_=1.0)]
    results = train_batch(cfgs, d2l, device=CPU)
    assert [r.config for r in results] == cfgs
    assert {r.device for r in results} == {"cpu"} and all(r.val_is_test for r in results)
    assert results[0].duration_s == results[1].duration_s > 0
    weight = results[0].state_dict["weight"]
    assert weight.shape == (1, 200) and not weight.requires_grad
    assert weight.untyped_storage().nbytes() == weight.numel() * weight.element_size()


def test_empty_batch() -> None:
    assert train_batch([]) == []


@pytest.mark.parametrize(
    "other",
    [
        {"task": "another-task"},
        {"epochs": 7},
        {"optimizer": "adam"},
        {"batch_size": 4},
        {"penalize": "all"},
        {"task_options": (("n_train", 30),)},
    ],
)
def test_batch_key_refuses_mixed_configs(other: dict[str, object]) -> None:
    first = TrialConfig(data_seed=0)
    second = first.replace(**other)
    assert batch_key(first) != batch_key(second)
    with pytest.raises(ConfigError, match="cannot share a batch"):
        train_batch([first, second])


# --- members of several data seeds: each trains on its own data ------------------------


@pytest.mark.parametrize(
    ("optimizer", "batch_size", "lr"),
    [("sgd", 5, 0.003), ("sgd", 1, 0.003), ("sgd", 0, 0.003), ("adam", 3, 0.01)],
)
def test_members_of_several_data_seeds_each_equal_train_on_their_own_data(
    optimizer: str, batch_size: int, lr: float
) -> None:
    """Candidates × seeds with data seed = seed (a confirmation on fresh data), plus one
    member whose data seed is not its seed and one that diverges: each is train()'s."""
    grid = [("none", 0.0, None), ("l2", 3.0, None), ("elastic_net", 0.5, 0.3)]
    cfgs = [
        TrialConfig(
            penalty=p,
            lambda_=lam,
            l1_ratio=ratio,
            optimizer=optimizer,
            lr=lr,
            batch_size=batch_size,
            seed=s,
            data_seed=s,
            epochs=25,
        )
        for s in (1, 2, 3)
        for p, lam, ratio in grid
    ]
    cfgs += [
        cfgs[1].replace(seed=7, data_seed=2),
        cfgs[0].replace(lr=5.0 if optimizer == "sgd" else 50.0, seed=4, data_seed=4),
    ]
    results = train_batch(cfgs, device=CPU)
    assert {r.config.effective_data_seed for r in results} == {1, 2, 3, 4}
    for cfg, bat in zip(cfgs, results, strict=True):
        assert_matches(train(cfg, device=CPU), bat, EXACT)
    if optimizer == "sgd":
        assert results[-1].status is TrainStatus.DIVERGED


def test_members_of_several_data_seeds_take_their_tasks_from_a_mapping(d2l: Task) -> None:
    """Given tasks are used as given (here: one model family for both data seeds)."""
    mlp = _mlp_task(d2l)
    other = dataclasses.replace(mlp, train=load_task(TrialConfig(data_seed=1)).train)
    cfgs = [TrialConfig(penalty="l2", lambda_=1.0, seed=s, data_seed=s, epochs=20) for s in (0, 1)]
    results = train_batch(cfgs, {(0, None): mlp, (1, None): other}, device=CPU)
    for cfg, task, bat in zip(cfgs, (mlp, other), results, strict=True):
        assert_matches(train(cfg, task, device=CPU), bat, exact=False)


def test_members_of_several_data_seeds_need_data_of_one_shape(d2l: Task) -> None:
    cfgs = [TrialConfig(data_seed=0), TrialConfig(data_seed=1)]
    with pytest.raises(ConfigError, match="a task per data seed"):
        train_batch(cfgs, d2l)
    smaller = dataclasses.replace(
        d2l, test=load_task(TrialConfig(task_options=(("n_test", 50),))).test
    )
    with pytest.raises(ConfigError, match="test splits differ in shape"):
        train_batch(cfgs, {(0, None): d2l, (1, None): smaller})


def test_batch_key_accepts_what_members_may_vary() -> None:
    first = TrialConfig(data_seed=0, penalize="weight, bias")
    other = first.replace(penalty="elastic_net", lambda_=2, l1_ratio=0.3, lr=0.1, seed=9)
    assert batch_key(first) == batch_key(other.replace(penalize="weight,bias"))
    fresh = other.replace(data_seed=9)
    assert batch_key(fresh) != batch_key(first) and stack_key(fresh) == stack_key(first)


# --- a model that is not nn.Linear takes the generic vmap path --------------------------


def _mlp_task(d2l: Task) -> Task:
    def make_mlp(init: torch.Generator) -> nn.Module:
        model = nn.Sequential(nn.Linear(200, 16), nn.ReLU(), nn.Linear(16, 1))
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.normal(0.0, 0.1, p.shape, generator=init))
        return model

    return dataclasses.replace(d2l, make_model=make_mlp)


@pytest.mark.parametrize(("optimizer", "scope"), [("sgd", "all"), ("adam", "0.weight,2.*")])
def test_generic_modules_match_within_tolerance(d2l: Task, optimizer: str, scope: str) -> None:
    cfgs = [
        TrialConfig(penalty=p, lambda_=lam, optimizer=optimizer, penalize=scope, epochs=40)
        for p, lam in itertools.product(PENALTIES, (0.1, 3.0))
    ]
    _assert_all_match(cfgs, _mlp_task(d2l), exact=False)


# --- timing: python tests/trainer/test_batched.py ---------------------------------------


def _timing(ks: Sequence[int] = (1, 8, 64, 256), repeats: int = 3) -> None:
    """Per-trial ms of train_batch at several K against sequential train(), one thread.

    Members differ in penalty and λ; "1 seed" is the sweep's default (common random
    numbers), "K seeds" gives every member its own init and minibatch order.
    """
    import functools
    import time
    from collections.abc import Callable

    torch.set_num_threads(1)
    task = load_task(TrialConfig())

    def configs(k: int, seeds: int) -> list[TrialConfig]:
        return [
            TrialConfig(
                penalty=PENALTIES[i % 6], lambda_=0.01 * (i + 1), seed=i % seeds, data_seed=0
            )
            for i in range(k)
        ]

    def best_ms(run: Callable[[], object], trials: int) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        return min(times) / trials * 1000

    train(configs(1, 1)[0], task, device=CPU)  # warm up
    train_batch(configs(2, 2), task, device=CPU)
    seq = best_ms(lambda: [train(c, task, device=CPU) for c in configs(6, 1)], 6)
    print(f"sequential train(): {seq:.2f} ms/trial (d2l, 100 epochs, 1 thread)")
    print("   K   1 seed ms/trial (speed-up)   K seeds ms/trial (speed-up)")
    for k in ks:
        one, many = (
            best_ms(functools.partial(train_batch, configs(k, seeds), task, device=CPU), k)
            for seeds in (1, k)
        )
        print(f"{k:4d}   {one:8.2f} ({seq / one:5.1f}x)       {many:8.2f} ({seq / many:5.1f}x)")


if __name__ == "__main__":
    _timing()

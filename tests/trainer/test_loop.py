import math

import pytest
import torch

from trainer import Penalty, TrainStatus, TrialConfig, train
from trainer.config import Optimizer
from trainer.seeding import stream_generator
from trainer.tasks import load_task

D2L = TrialConfig(task="d2l-synthetic", epochs=100)


@pytest.fixture(scope="module")
def d2l_runs() -> dict[float, dict[str, float | None]]:
    task = load_task(D2L)
    return {
        lam: train(D2L.replace(penalty="l2", lambda_=lam), task).final for lam in (0, 0.3, 1, 3, 10)
    }


def test_lambda_zero_overfits(d2l_runs: dict[float, dict[str, float | None]]) -> None:
    zero = d2l_runs[0]
    assert zero["train_loss"] is not None and zero["test_loss"] is not None
    assert zero["train_loss"] < zero["test_loss"] / 1000
    init = load_task(D2L).make_model(stream_generator(D2L.seed, "init")).weight.norm().item()
    assert zero["w_norm"] == pytest.approx(init, rel=0.1)
    assert 11 < init < 17  # ~sqrt(200): the init is independent of the data


def test_lambda_three_generalizes(d2l_runs: dict[float, dict[str, float | None]]) -> None:
    assert d2l_runs[3]["test_loss"] < d2l_runs[0]["test_loss"] / 100  # type: ignore[operator]


def test_larger_lambda_smaller_norm(d2l_runs: dict[float, dict[str, float | None]]) -> None:
    norms = [d2l_runs[lam]["w_norm"] for lam in sorted(d2l_runs)]
    assert norms == sorted(norms, reverse=True)  # type: ignore[type-var]
    assert len(set(norms)) == len(norms)


@pytest.mark.parametrize("lam", [0.1, 1.0, 3.0, 10.0])
def test_l2_equals_sgd_weight_decay(lam: float) -> None:
    cfg = D2L.replace(epochs=30)
    a = train(cfg.replace(penalty=Penalty.L2, lambda_=lam))
    b = train(cfg.replace(penalty=Penalty.WEIGHT_DECAY, lambda_=lam))
    for name in a.state_dict:
        torch.testing.assert_close(a.state_dict[name], b.state_dict[name], rtol=1e-5, atol=1e-6)


def test_adamw_weight_decay_differs_from_adam_l2() -> None:
    cfg = D2L.replace(epochs=10, optimizer=Optimizer.ADAM, lr=0.01, lambda_=3.0)
    adam_l2 = train(cfg.replace(penalty=Penalty.L2)).state_dict["weight"]
    adamw = train(cfg.replace(optimizer=Optimizer.ADAMW, penalty=Penalty.WEIGHT_DECAY)).state_dict
    assert not torch.allclose(adam_l2, adamw["weight"], rtol=1e-3)


def test_same_seed_is_bit_identical() -> None:
    cfg = D2L.replace(epochs=20, penalty=Penalty.ELASTIC_NET, lambda_=0.5)
    a, b = train(cfg), train(cfg)
    assert a.history == b.history
    for name in a.state_dict:
        assert torch.equal(a.state_dict[name], b.state_dict[name])


def test_seeds_change_init_but_not_data_when_data_seed_fixed() -> None:
    one = D2L.replace(seed=1, data_seed=7)
    two = D2L.replace(seed=2, data_seed=7)
    t1, t2 = load_task(one), load_task(two)
    assert torch.equal(t1.train.X, t2.train.X) and torch.equal(t1.test.y, t2.test.y)
    w1 = t1.make_model(stream_generator(one.seed, "init")).weight
    w2 = t2.make_model(stream_generator(two.seed, "init")).weight
    assert not torch.equal(w1, w2)
    other_data = load_task(D2L.replace(seed=1, data_seed=8))
    assert not torch.equal(t1.train.X, other_data.train.X)


def test_init_is_uncorrelated_with_data() -> None:
    # Same integer seed for data and init must not give correlated tensors.
    task = load_task(D2L)
    w = task.make_model(stream_generator(D2L.seed, "init")).weight.flatten()
    x = task.train.X[0]
    corr = torch.corrcoef(torch.stack([w, x]))[0, 1].item()
    assert abs(corr) < 0.3


def test_history_has_every_epoch_and_penalty_value() -> None:
    result = train(D2L.replace(epochs=7, penalty=Penalty.L1, lambda_=0.2))
    assert result.status is TrainStatus.COMPLETED
    assert all(len(v) == 7 for v in result.history.values())
    assert all(v > 0 for v in result.history["penalty_value"])
    assert result.val_is_test and result.history["val_loss"] == result.history["test_loss"]


def test_divergence_stops_with_a_clear_state() -> None:
    result = train(D2L.replace(lr=5.0, epochs=50))
    assert result.status is TrainStatus.DIVERGED
    assert result.diverged_epoch is not None and result.diverged_epoch < 50
    assert result.epochs_run == result.diverged_epoch - 1
    assert all(math.isfinite(v) for vs in result.history.values() for v in vs)


def test_callback_can_stop_training() -> None:
    seen: list[int] = []

    def stop_at_three(epoch: int, metrics: object) -> bool:
        seen.append(epoch)
        return epoch == 3

    result = train(D2L.replace(epochs=10), on_epoch=stop_at_three)
    assert result.status is TrainStatus.STOPPED and result.epochs_run == 3 and seen == [1, 2, 3]


def test_full_batch_and_glob_scope() -> None:
    result = train(D2L.replace(batch_size=0, epochs=5, penalize="bias", penalty="l2", lambda_=1))
    assert result.epochs_run == 5
    assert result.history["w_norm"][-1] == pytest.approx(abs(result.state_dict["bias"].item()))

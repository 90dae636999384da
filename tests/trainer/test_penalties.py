import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from trainer import ConfigError, Penalty, TrialConfig
from trainer.penalties import l2_norm, penalty_term, penalty_value, select_penalized


def _tensor(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_(True)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), lam=st.floats(1e-4, 100))
def test_l2_gradient_is_lambda_w(seed: int, lam: float) -> None:
    w = _tensor(seed, (3, 4))
    term = penalty_term([w], Penalty.L2, lam, None)
    assert term is not None
    term.backward()
    torch.testing.assert_close(w.grad, lam * w.detach())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), lam=st.floats(1e-4, 100))
def test_l1_gradient_is_lambda_sign_w(seed: int, lam: float) -> None:
    w = _tensor(seed, (5, 2))
    term = penalty_term([w], Penalty.L1, lam, None)
    assert term is not None
    term.backward()
    torch.testing.assert_close(w.grad, lam * torch.sign(w.detach()))


def test_values_match_their_formulas() -> None:
    w1, w2 = _tensor(1, (2, 3)), _tensor(2, (4, 1))
    ws = [w1, w2]
    flat = torch.cat([w1.detach().flatten(), w2.detach().flatten()])
    lam = 0.7

    def value(p: Penalty, ratio: float | None = None) -> float:
        term = penalty_term(ws, p, lam, ratio)
        assert term is not None and term.requires_grad  # a term the optimizer can follow
        return float(term.detach())

    assert value(Penalty.L2) == pytest.approx(lam * 0.5 * float(flat @ flat))
    assert value(Penalty.L1) == pytest.approx(lam * float(flat.abs().sum()))
    # un-squared: Σ over tensors of torch.norm(W, p=2), not the norm of everything together
    unsq = float(torch.norm(w1.detach(), p=2) + torch.norm(w2.detach(), p=2))
    assert value(Penalty.L2_UNSQUARED) == pytest.approx(lam * unsq)
    enet = lam * (0.3 * float(flat.abs().sum()) + 0.7 * 0.5 * float(flat @ flat))
    assert value(Penalty.ELASTIC_NET, 0.3) == pytest.approx(enet)
    assert penalty_term(ws, Penalty.NONE, lam, None) is None
    assert penalty_term(ws, Penalty.WEIGHT_DECAY, lam, None) is None  # the optimizer applies it
    assert float(l2_norm(ws)) == pytest.approx(float(flat.norm()))
    wd = TrialConfig(penalty=Penalty.WEIGHT_DECAY, lambda_=lam)
    assert float(penalty_value(ws, wd)) == pytest.approx(value(Penalty.L2))


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))


def test_default_scope_leaves_biases_alone() -> None:
    model = _mlp()
    chosen = select_penalized(model.named_parameters(), "weights")
    assert [n for n, _ in chosen] == ["0.weight", "2.weight"]
    term = penalty_term([p for _, p in chosen], Penalty.L2, 1.0, None)
    assert term is not None
    term.backward()
    assert model[0].bias.grad is None and model[2].bias.grad is None
    assert model[0].weight.grad is not None


def test_all_and_glob_scopes() -> None:
    model = _mlp()
    every = [n for n, _ in select_penalized(model.named_parameters(), "all")]
    assert every == ["0.weight", "0.bias", "2.weight", "2.bias"]
    first = select_penalized(model.named_parameters(), "0.*")
    assert [n for n, _ in first] == ["0.weight", "0.bias"]
    term = penalty_term([p for _, p in first], Penalty.L1, 1.0, None)
    assert term is not None
    term.backward()
    assert model[2].weight.grad is None  # the other layer is untouched


def test_glob_matching_nothing_is_an_error() -> None:
    with pytest.raises(ConfigError, match="matches no parameter"):
        select_penalized(_mlp().named_parameters(), "encoder.*")

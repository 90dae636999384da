"""The tabular tasks: splits, standardization, CSV parsing, user tasks, and agreement of the
trainer's l2 / l1 solutions with scikit-learn's Ridge / Lasso.

Alpha mapping (see README "Tasks and models"): the trainer minimizes
    (1/n)·Σ (ŷ−y)²/2 + λ·½‖w‖²   (l2)      and      (1/n)·Σ (ŷ−y)²/2 + λ‖w‖₁   (l1),
the bias unpenalized. Ridge minimizes Σ (ŷ−y)² + α‖w‖² (the first objective times 2n), so
α = n_train·λ; Lasso minimizes (1/(2n))·Σ (ŷ−y)² + α‖w‖₁, so α = λ.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer import TaskError, TrialConfig, train
from trainer.tasks import Task, load_task
from trainer.tasks.tabular import SPLIT_SEED

CPU = torch.device("cpu")


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> str:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def regression_csv(path: Path, n: int = 150, seed: int = 0) -> str:
    """y = X·w + 3 + noise with features of unequal scale and offset (so scaling matters)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)) * [1, 2, 0.5, 3, 1] + [0, 1, 2, 3, 4]
    y = X @ np.array([1.5, -2.0, 0.0, 0.5, 0.0]) + 3 + rng.normal(scale=0.5, size=n)
    rows = [[*map(float, x), float(t)] for x, t in zip(X, y, strict=True)]
    return write_csv(path, [*(f"x{i}" for i in range(5)), "y"], rows)


def csv_config(path: str, **changes: object) -> TrialConfig:
    options = (("train_csv", path), ("target", "y"))
    return TrialConfig(task="csv", task_options=options, batch_size=0, device="cpu").replace(
        **changes
    )


def as_numpy(task: Task) -> tuple[np.ndarray, ...]:
    splits = (task.train, task.val, task.test)
    return tuple(a for s in splits for a in (s.X.double().numpy(), s.y.double().numpy().ravel()))


# --- bundled data sets -----------------------------------------------------------------


@pytest.mark.parametrize(("name", "rows", "classes"), [("diabetes", 442, 0), ("digits", 1797, 10)])
def test_bundled_split_sizes_and_standardization(name: str, rows: int, classes: int) -> None:
    task = load_task(TrialConfig(task=name))
    sizes = [len(task.train), len(task.val), len(task.test)]
    assert sum(sizes) == rows and sizes[1] == sizes[2] == round(0.2 * rows)
    # standardized with training statistics only: exactly 0/1 on train, not on the others
    torch.testing.assert_close(
        task.train.X.mean(0), torch.zeros(task.train.X.shape[1]), atol=1e-5, rtol=0
    )
    std = task.train.X.std(0, unbiased=False)
    constant = std < 1e-6  # digits has always-blank border pixels: they stay 0, scale 1
    assert torch.all((std[~constant] - 1).abs() < 1e-4) and int(constant.sum()) < 5
    assert task.val.X.mean(0).abs().max() > 1e-3
    assert task.classification == bool(classes)
    if classes:
        assert task.train.y.dtype == torch.long and set(task.train.y.tolist()) == set(range(10))


def test_split_is_fixed_whatever_the_seed() -> None:
    a = load_task(TrialConfig(task="diabetes", seed=0))
    b = load_task(TrialConfig(task="diabetes", seed=7, data_seed=3))
    assert torch.equal(a.val.X, b.val.X) and torch.equal(a.test.y, b.test.y)
    assert SPLIT_SEED == 0  # documented in the README


def _index_csv(path: Path) -> str:
    """20 rows whose target is the row's index, so a split's targets are its rows."""
    return write_csv(path, ["x", "target"], [[i * 0.5, i] for i in range(20)])


def _rows(task: Task) -> list[list[int]]:
    return [[int(v) for v in s.y.reshape(-1).tolist()] for s in (task.train, task.val, task.test)]


# The fixed split, as every study trial and `sweeps train` has always drawn it.
DIGITS_TEST_LABELS = [4, 8, 4, 9, 6, 8, 7, 7, 2, 1, 4, 3, 8, 4, 4, 5]
CSV_SPLIT = [
    [4, 5, 13, 19, 7, 14, 3, 6, 9, 17, 11, 2],
    [16, 18, 10, 12],
    [15, 8, 1, 0],
]


def test_plain_configs_keep_the_fixed_split(tmp_path: Path) -> None:
    """Seeds, data seeds and a study's repeats (data seed ≠ seed) never move the split."""
    for cfg in (TrialConfig(seed=5), TrialConfig(seed=6, data_seed=5)):
        digits = load_task(cfg.replace(task="digits"))
        assert digits.test.y[:16].tolist() == DIGITS_TEST_LABELS
        assert [len(digits.train), len(digits.val), len(digits.test)] == [1079, 359, 359]
    path = _index_csv(tmp_path / "i.csv")
    options = (("train_csv", path), ("target", "target"), ("standardize", False))
    for seed, data_seed in ((0, None), (4, None), (9, 4)):
        cfg = TrialConfig(task="csv", task_options=options, seed=seed, data_seed=data_seed)
        assert _rows(load_task(cfg)) == CSV_SPLIT


def test_a_split_seed_draws_its_own_split_and_a_test_csv_stays(tmp_path: Path) -> None:
    path = _index_csv(tmp_path / "i.csv")
    options = (("train_csv", path), ("target", "target"), ("standardize", False))
    cfg = TrialConfig(task="csv", task_options=options)
    one, two = (_rows(load_task(cfg.replace(split_seed=s))) for s in (1, 2))
    assert one != two and one != CSV_SPLIT and two != CSV_SPLIT
    assert _rows(load_task(cfg.replace(split_seed=1, seed=8))) == one  # the split's alone
    for rows in (one, two):
        assert sorted(v for part in rows for v in part) == list(range(20))
        assert list(map(len, rows)) == [12, 4, 4]
    test_path = write_csv(tmp_path / "t.csv", ["x", "target"], [[1.0, 100], [2.0, 101]])
    with_test = cfg.replace(task_options=(*options, ("test_csv", test_path)))
    one, two = (_rows(load_task(with_test.replace(split_seed=s))) for s in (1, 2))
    assert one[:2] != two[:2] and one[2] == two[2] == [100, 101]
    digits = [load_task(TrialConfig(task="digits", split_seed=s)).test.y for s in (1, 2)]
    assert not torch.equal(digits[0], digits[1])
    assert digits[0][:16].tolist() != DIGITS_TEST_LABELS


def test_digits_mlp_reports_accuracy() -> None:
    options = (("model", "mlp"), ("hidden", "16"))
    cfg = TrialConfig(task="digits", task_options=options, optimizer="adam", lr=0.01)
    result = train(cfg.replace(batch_size=64, epochs=3, device="cpu"))
    assert set(result.accuracy) == {"train_accuracy", "val_accuracy", "test_accuracy"}
    assert result.accuracy["val_accuracy"] > 0.8  # chance is 0.1
    summary = result.summary()
    assert summary["val_accuracy"] == result.accuracy["val_accuracy"]
    regression = train(TrialConfig(task="diabetes", epochs=1, device="cpu"))
    assert regression.accuracy == {} and regression.summary()["val_accuracy"] is None


# --- csv ---------------------------------------------------------------------------------


def test_csv_split_and_standardize_with_training_statistics(tmp_path: Path) -> None:
    path = regression_csv(tmp_path / "r.csv")
    task = load_task(csv_config(path))
    assert [len(task.train), len(task.val), len(task.test)] == [90, 30, 30]
    raw = np.loadtxt(path, delimiter=",", skiprows=1)[:, :5]
    order = torch.randperm(150, generator=torch.Generator().manual_seed(SPLIT_SEED))
    train_raw = raw[order[:90].numpy()]
    expected = (raw[order[90:120].numpy()] - train_raw.mean(0)) / train_raw.std(0)
    np.testing.assert_allclose(task.val.X.numpy(), expected, rtol=1e-5, atol=1e-5)
    plain = load_task(
        csv_config(path, task_options=(*csv_config(path).task_options, ("standardize", False)))
    )
    np.testing.assert_allclose(plain.val.X.numpy(), raw[order[90:120].numpy()], rtol=1e-6)


def test_csv_test_file_columns_are_aligned_by_name(tmp_path: Path) -> None:
    train_path = write_csv(
        tmp_path / "a.csv", ["a", "b", "y"], [[i, 2 * i, i % 2] for i in range(20)]
    )
    test_path = write_csv(tmp_path / "b.csv", ["y", "b", "a"], [[1, 200.0, 100.0]])
    options = (
        ("train_csv", train_path),
        ("test_csv", test_path),
        ("target", "y"),
        ("standardize", False),
        ("classification", True),
    )
    task = load_task(TrialConfig(task="csv", task_options=options))
    assert task.test.X.tolist() == [[100.0, 200.0]] and task.test.y.tolist() == [1]
    assert len(task.train) + len(task.val) == 20 and task.classification


def test_csv_class_labels_may_be_text(tmp_path: Path) -> None:
    rows = [[i, ["cat", "dog", "emu"][i % 3]] for i in range(30)]
    path = write_csv(tmp_path / "c.csv", ["x", "kind"], rows)
    options = (("train_csv", path), ("target", "kind"), ("classification", True))
    task = load_task(TrialConfig(task="csv", task_options=options))
    assert set(task.train.y.tolist()) == {0, 1, 2}
    assert task.make_model(torch.Generator()).weight.shape == (3, 1)


@pytest.mark.parametrize(
    ("header", "rows", "options", "fragment"),
    [
        (["x", "y"], [[1, 2]] * 10, (("target", "z"),), "no column 'z'"),
        (["x", "y"], [["a", 2]] * 10, (), "column 'x' is not numeric"),
        (["x", "y"], [[1, 2]] * 9 + [["nan", 1]], (), "NaN"),
        (["x", "y"], [[1, 2]] * 9 + [["", 1]], (), "empty cell"),
        (["x", "y"], [], (), "no data rows"),
        (["x", "y"], [[1, 2]] * 2, (), "cannot split 2 rows"),
        (["x", "x", "y"], [[1, 1, 2]] * 10, (), "appears twice"),
    ],
)
def test_csv_bad_tables(
    tmp_path: Path,
    header: list[str],
    rows: list[list[object]],
    options: tuple[tuple[str, str], ...],
    fragment: str,
) -> None:
    path = write_csv(tmp_path / "bad.csv", header, rows)
    given = dict((("train_csv", path), ("target", "y"), *options))
    with pytest.raises(TaskError, match=fragment):
        load_task(TrialConfig(task="csv", task_options=tuple(given.items())))


WIDE = 100_000  # columns: a scan per column over the header would take hours


def wide_csv(path: Path, header: list[str], rows: int = 12) -> str:
    """`rows` data rows of small integers under `header` (the target `y` included)."""
    rng = np.random.default_rng(0)
    np.savetxt(
        path,
        rng.integers(0, 9, size=(rows, len(header))),
        fmt="%d",
        delimiter=",",
        header=",".join(header),
        comments="",
    )
    return str(path)


@pytest.mark.timeout(120)
def test_csv_reads_a_table_of_100000_columns(tmp_path: Path) -> None:
    path = wide_csv(tmp_path / "wide.csv", [*(f"x{i}" for i in range(WIDE - 1)), "y"])
    task = load_task(csv_config(path))
    assert task.train.X.shape[1] == WIDE - 1
    assert len(task.train) + len(task.val) + len(task.test) == 12


@pytest.mark.timeout(120)
def test_csv_names_the_first_duplicated_column_of_a_wide_header(tmp_path: Path) -> None:
    header = [*(f"x{i}" for i in range(WIDE - 1)), "y"]
    header[WIDE - 3], header[WIDE - 2] = "x7", "x5"  # two names taken twice, far apart
    path = wide_csv(tmp_path / "dup.csv", header)
    with pytest.raises(TaskError, match="column 'x5' appears twice"):
        load_task(csv_config(path))


@pytest.mark.timeout(120)
def test_csv_without_the_target_names_a_wide_tables_first_columns_only(tmp_path: Path) -> None:
    path = wide_csv(tmp_path / "wide.csv", [f"x{i}" for i in range(WIDE)])
    with pytest.raises(TaskError, match="no column 'y'") as raised:
        load_task(csv_config(path))
    assert f"{WIDE} in all" in str(raised.value) and len(str(raised.value)) < 500


# --- python:MODULE:FUNCTION ------------------------------------------------------------

USER_TASK = """
import torch
from trainer.tasks import Split, Task, squared_loss
from trainer.models import ModelSpec, make_model_factory


def build(data_seed):
    gen = torch.Generator().manual_seed(data_seed)
    X = torch.randn(60, 3, generator=gen)
    y = X @ torch.tensor([[1.0], [2.0], [-1.0]])
    splits = [Split(X[i : i + 20], y[i : i + 20]) for i in (0, 20, 40)]
    model = make_model_factory(ModelSpec(), 3, 1)
    return Task("mine", *splits, make_model=model, loss=squared_loss)


def not_a_task(data_seed):
    return 42
"""


def test_python_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "user_task_mod.py").write_text(USER_TASK)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = TrialConfig(task="python:user_task_mod:build", batch_size=0, lr=0.1, epochs=200)
    result = train(cfg.replace(device="cpu"))
    assert result.final["val_loss"] is not None and result.final["val_loss"] < 1e-3
    with pytest.raises(TaskError, match=r"returned int, not a trainer\.tasks\.Task"):
        load_task(cfg.replace(task="python:user_task_mod:not_a_task"))
    with pytest.raises(TaskError, match="has no function 'nope'"):
        load_task(cfg.replace(task="python:user_task_mod:nope"))
    with pytest.raises(TaskError, match="no module named 'no_such_mod_xyz'"):
        load_task(cfg.replace(task="python:no_such_mod_xyz:build"))
    with pytest.raises(TaskError, match="must be python:MODULE:FUNCTION"):
        load_task(cfg.replace(task="python:only_module"))


# --- agreement with scikit-learn -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("lam", [0.1, 1.0])
def test_full_batch_l2_is_ridge(tmp_path: Path, lam: float) -> None:
    """Full-batch gradient descent on a strongly convex problem converges to Ridge's
    solution (α = n_train·λ): weights and test loss agree to float32 precision."""
    from sklearn.linear_model import Ridge

    cfg = csv_config(
        regression_csv(tmp_path / "r.csv"), penalty="l2", lambda_=lam, lr=0.1, epochs=400
    )
    task = load_task(cfg)
    result = train(cfg, task)
    X, y, _, _, X_test, y_test = as_numpy(task)
    ridge = Ridge(alpha=len(y) * lam).fit(X, y)
    weight = result.state_dict["weight"].double().numpy().ravel()
    np.testing.assert_allclose(weight, ridge.coef_, rtol=1e-5, atol=1e-5)
    assert result.state_dict["bias"].item() == pytest.approx(ridge.intercept_, abs=1e-5)
    ridge_test_loss = float(np.mean((ridge.predict(X_test) - y_test) ** 2 / 2))
    assert result.final["test_loss"] == pytest.approx(ridge_test_loss, rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("lam", [0.1, 0.3])
def test_full_batch_l1_approaches_lasso(tmp_path: Path, lam: float) -> None:
    """Subgradient descent on λ‖w‖₁ hovers within ~lr·λ of zero for the dropped features,
    so it reaches Lasso's objective (α = λ) from above, to within 1e-3 relative."""
    from sklearn.linear_model import Lasso

    cfg = csv_config(
        regression_csv(tmp_path / "r.csv"), penalty="l1", lambda_=lam, lr=0.02, epochs=1000
    )
    task = load_task(cfg)
    result = train(cfg, task)
    X, y, *_ = as_numpy(task)
    lasso = Lasso(alpha=lam, tol=1e-12, max_iter=100_000).fit(X, y)
    lasso_objective = float(
        np.mean((lasso.predict(X) - y) ** 2) / 2 + lam * np.abs(lasso.coef_).sum()
    )
    train_loss, penalty = result.final["train_loss"], result.final["penalty_value"]
    assert train_loss is not None and penalty is not None
    ours = train_loss + penalty
    assert lasso_objective * (1 - 1e-6) <= ours <= lasso_objective * (1 + 1e-3)
    weight = result.state_dict["weight"].double().numpy().ravel()
    np.testing.assert_allclose(weight, lasso.coef_, atol=1e-2)

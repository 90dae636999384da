"""The study: search quality, determinism, resume, refusals — in this process."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from tests.sweeps.cli_helpers import assert_usage_error, invoke
from tests.sweeps.study_helpers import grid_test_loss, load


def _run(home: Path, *args: str, storage: str | None = None) -> dict[str, object]:
    extra = ["--storage", storage] if storage else []
    result = invoke("run", "--home", str(home), "--no-track", "--json", *extra, *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _db(home: Path) -> str:
    return f"sqlite:///{home / 'sweeps.db'}"


@pytest.mark.slow
def test_tpe_finds_a_good_l2_lambda(tmp_path: Path) -> None:
    home = tmp_path / "h"
    doc = _run(
        home,
        "--study",
        "tpe",
        "--penalties",
        "l2",
        "--lambda-min",
        "1e-3",
        "--lambda-max",
        "100",
        "--trials",
        "30",
        "--pruner",
        "none",
    )
    best = doc["best"][0]  # type: ignore[index]
    lams = [10 ** (-3 + 5 * i / 39) for i in range(40)]
    grid = grid_test_loss(lams)
    grid_best = min(grid.values())
    found = grid_test_loss([best["lambda"]])[best["lambda"]]
    assert found <= 1.10 * grid_best, (best, grid_best)
    unregularized = grid_test_loss([0.0])[0.0]
    assert found < unregularized / 100


def test_same_seed_same_trials(tmp_path: Path) -> None:
    home = tmp_path / "h"
    common = ["--penalties", "l1,l2,none", "--trials", "6", "--epochs", "5", "--seed", "3"]
    _run(home, "--study", "a", *common)
    _run(home, "--study", "b", *common)
    a, b = (load(s, _db(home)).trials for s in ("a", "b"))
    assert [t.params for t in a] == [t.params for t in b]
    assert [t.value for t in a] == [t.value for t in b]
    assert len({json.dumps(t.params, sort_keys=True) for t in a}) > 1


def test_resume_adds_trials_and_refuses_another_space(tmp_path: Path) -> None:
    home = tmp_path / "h"
    args = ["--study", "r", "--penalties", "l2", "--epochs", "3"]
    _run(home, *args, "--trials", "3")
    doc = _run(home, *args, "--trials", "2")
    # A resumed sampler of the same seed may propose a finished trial again: such a
    # repeat takes its result and leaves --trials to trials that train.
    trials = load("r", _db(home)).trials
    assert sum(doc["states"].values()) == len(trials)  # type: ignore[attr-defined]
    assert [t.number for t in trials] == list(range(len(trials)))
    # The resumed run's 2 trials, plus up to 2 repeats that did not count toward them.
    assert len(trials) == 3 + 2 + min(doc["reused"], 2)  # type: ignore[call-overload]
    other = invoke(
        "run",
        "--home",
        str(home),
        "--no-track",
        "--study",
        "r",
        "--penalties",
        "l1",
        "--epochs",
        "3",
        "--trials",
        "1",
    )
    assert_usage_error(other, "different search space", "penalties")
    assert len(load("r", _db(home)).trials) == len(trials)


def test_divergence_is_pruned_and_the_study_goes_on(tmp_path: Path) -> None:
    home = tmp_path / "h"
    doc = _run(
        home, "--study", "d", "--penalties", "none", "--lr", "5", "--epochs", "30", "--trials", "2"
    )
    assert doc["states"] == {"PRUNED": 2}
    trial = load("d", _db(home)).trials[0]
    assert "diverged at epoch" in trial.user_attrs["sweeps.record"]["error"]


def test_grid_sampler_enumerates_the_conditional_space(tmp_path: Path) -> None:
    home = tmp_path / "h"
    doc = _run(
        home,
        "--study",
        "g",
        "--sampler",
        "grid",
        "--penalties",
        "none,l2",
        "--grid-points",
        "3",
        "--trials",
        "10",
        "--epochs",
        "2",
    )
    trials = load("g", _db(home)).trials
    assert sum(doc["states"].values()) == 4  # none + 3 λ: the sampler stops when exhausted
    points = {(t.params["penalty"], t.params.get("lambda")) for t in trials}
    assert len(points) == 4


@pytest.mark.parametrize("sampler", ["random", "cmaes", "gp"])
def test_other_samplers_run(tmp_path: Path, sampler: str) -> None:
    doc = _run(
        tmp_path / "h",
        "--study",
        sampler,
        "--sampler",
        sampler,
        "--penalties",
        "l1,l2",
        "--trials",
        "4",
        "--epochs",
        "2",
        "--pruner",
        "hyperband",
    )
    assert sum(doc["states"].values()) == 4


def test_progress_lines_when_not_a_terminal(tmp_path: Path) -> None:
    result = invoke(
        "run",
        "--home",
        str(tmp_path / "h"),
        "--no-track",
        "--study",
        "p",
        "--penalties",
        "l2",
        "--trials",
        "2",
        "--epochs",
        "2",
    )
    assert result.exit_code == 0
    assert "[1/2] trial #0 l2 λ=" in result.stderr and "[2/2]" in result.stderr
    assert "penalty" in result.stdout and "l2" in result.stdout  # the best-per-penalty table


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--lambda-min", "1", "--lambda-max", "1"], "lambda-min"),
        (["--lambda-min", "0"], "lambda-min"),
        (["--penalties", ""], "--penalties"),
        (["--penalties", "l2,bogus"], "unknown penalty"),
        (["--sampler", "anneal"], "--sampler"),
        (["--pruner", "asha"], "--pruner"),
        (["--trials", "0"], "--trials"),
        (["--task", "nope"], "unknown task"),
        (["--device", "cuda:7"], "cuda"),
        (["--storage", "notaurl"], "malformed storage URL"),
        (["--storage", "mysql://u:hunter2@localhost/db"], "unsupported storage"),
        (["--config", "/nonexistent/sweep.toml"], "does not exist"),
    ],
)
def test_bad_input_creates_nothing(tmp_path: Path, args: list[str], fragment: str) -> None:
    home = tmp_path / "h"
    result = invoke("run", "--home", str(home), "--study", "x", *args)
    assert_usage_error(result, fragment)
    assert "hunter2" not in result.stderr
    assert not home.exists()


def test_sqlite_in_a_missing_directory(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing' / 'db.sqlite'}"
    result = invoke("run", "--home", str(tmp_path / "h"), "--study", "x", "--storage", url)
    assert_usage_error(result, "does not exist")
    assert not (tmp_path / "missing").exists()


@pytest.mark.postgres
def test_unreachable_postgres_masks_the_password(tmp_path: Path) -> None:
    url = "postgresql://bob:s3cret-pw@127.0.0.1:1/sweeps"
    result = invoke(
        "run", "--home", str(tmp_path / "h"), "--study", "x", "--storage", url, "--no-track"
    )
    assert_usage_error(result, "cannot reach storage", "***")
    assert "s3cret-pw" not in result.stderr + result.stdout


@pytest.mark.postgres
def test_study_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    doc = _run(
        tmp_path / "h",
        "--study",
        "pg",
        "--penalties",
        "l2,none",
        "--trials",
        "3",
        "--epochs",
        "3",
        storage=postgres_url,
    )
    assert sum(doc["states"].values()) == 3
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert {"alembic_version", "sweeps_trials", "sweeps_studies"} <= names
    assert len(optuna.get_all_study_names(postgres_url)) == 1


_GRID = ("--sampler", "grid", "--grid-points", "2", "--epochs", "2", "--no-track", "--quiet")


def _key(params: dict[str, object]) -> tuple[object, ...]:
    return (params["penalty"], params.get("lambda"), params.get("l1_ratio"))


def _points(trials: list[optuna.trial.FrozenTrial]) -> list[tuple[object, ...]]:
    return [_key(t.params) for t in trials]


def _grid_params(penalties: str) -> list[dict[str, object]]:
    """The points of the grid of `_GRID` over `penalties`, as trials' parameters."""
    from sweeps.config import SweepConfig
    from sweeps.sampling import L1_RATIO_GRID, lambda_grid

    cfg = SweepConfig.from_mapping(
        {"study": "x", "sampler": "grid", "grid_points": 2, "penalties": penalties}
    )
    points: list[dict[str, object]] = []
    for penalty in penalties.split(","):
        if penalty == "none":
            points.append({"penalty": penalty})
            continue
        for lam in lambda_grid(cfg):
            ratios = L1_RATIO_GRID if penalty == "elastic_net" else (None,)
            points += [{"penalty": penalty, "lambda": lam, "l1_ratio": r} for r in ratios]
    return [{k: v for k, v in p.items() if v is not None} for p in points]


def _grid(penalties: str) -> set[tuple[object, ...]]:
    return {_key(p) for p in _grid_params(penalties)}


@pytest.mark.slow
def test_workers_in_batches_run_each_grid_point_once(tmp_path: Path, storage_url: str) -> None:
    """Two workers asking rounds of two at once: each of the 9 points once, then the
    study stops (with trials to spare)."""
    from tests.sweeps.study_helpers import cli_env, run_cli

    penalties = "l2,none,elastic_net"
    args = ["run", "--study", "g", "--penalties", penalties, *_GRID, "--trials", "20"]
    done = run_cli(*args, "--workers", "2", "--batch", "2", env=cli_env(tmp_path, storage_url))
    assert done.returncode == 0, done.stderr
    points = _points(load("g", storage_url).trials)
    assert sorted(points, key=str) == sorted(_grid(penalties), key=str)  # 9, no repeats


def _grid_study(home: Path, penalties: str) -> tuple[optuna.Study, list[dict[str, object]]]:
    """A grid study created for workers, and its points."""
    _run(home, "--study", "g", "--penalties", penalties, *_GRID, "--create-only")
    return load("g", _db(home)), _grid_params(penalties)


def _start(study: optuna.Study, point: dict[str, object]) -> optuna.Trial:
    """A RUNNING trial holding `point`, as a worker's ask leaves it."""
    from sweeps.attr_keys import CONFIG_ATTR
    from sweeps.sampling import suggest
    from sweeps.study import config_from_stored

    study.enqueue_trial(point)
    trial = study.ask()
    suggest(trial, config_from_stored(study.user_attrs[CONFIG_ATTR]))
    return trial


def _worker(home: Path) -> None:
    args = ["worker", "--study", "g", "--trials", "10", "--batch", "2", "--no-track", "--quiet"]
    # Held trials have no heartbeat: an hour's interval keeps them from counting as lost.
    result = invoke(*args, "--home", str(home), env={"SWEEPS_HEARTBEAT_S": "3600"})
    assert result.exit_code == 0, result.stderr


def test_a_worker_leaves_the_grid_points_other_workers_hold(tmp_path: Path) -> None:
    """Two of the three points are RUNNING in another worker: a worker asking rounds of
    two runs the third alone, and stops."""
    home = tmp_path / "h"
    study, points = _grid_study(home, "none,l2")
    for point in points[:2]:
        _start(study, point)
    _worker(home)
    ran = [t for t in load("g", _db(home)).trials if t.state.is_finished()]
    assert _points(ran) == [_key(points[2])]


def test_a_grid_point_whose_trial_failed_runs_once_from_its_retry(tmp_path: Path) -> None:
    """A lost trial's retry (WAITING with the point's parameters) runs that point; no
    other trial takes it, and the rest of the grid runs once."""
    home = tmp_path / "h"
    study, points = _grid_study(home, "none,l2")
    lost = _start(study, points[0])
    study.tell(lost, state=optuna.trial.TrialState.FAIL)
    study.enqueue_trial(points[0])  # as Optuna's RetryFailedTrialCallback does
    _worker(home)
    trials = load("g", _db(home)).trials
    ran = [t for t in trials if t.state is optuna.trial.TrialState.COMPLETE]
    assert sorted(_points(ran), key=str) == sorted(_grid("none,l2"), key=str)
    assert [t.state for t in trials].count(optuna.trial.TrialState.WAITING) == 0

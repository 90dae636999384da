"""`--history`: which epochs become MLflow metric rows; every epoch stays in history.csv,
and each penalty's best trial shows its whole curve once the study ends."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient

from sweeps import killpoints
from tests.sweeps.cli_helpers import invoke_json
from tests.sweeps.study_helpers import cli_env, sweeps_cmd
from tracking.mlflow_specs import HISTORY_FILE, history_csv, read_history_csv
from tracking.records import LARGE_ROUND, History, HistoryPolicy
from trainer.metrics import METRICS

EPOCHS = 20
EVERY = 4  # --report-every: the checkpoints


@pytest.mark.slow
@pytest.mark.parametrize(
    ("history", "thinned"),
    [
        ("epochs", set(range(1, EPOCHS + 1))),
        ("checkpoints", set(range(EVERY, EPOCHS + 1, EVERY))),
        ("final", {EPOCHS}),
        ("auto", set(range(EVERY, EPOCHS + 1, EVERY))),  # rounds of one: checkpoints
    ],
)
def test_history_policy(tmp_path: Path, history: str, thinned: set[int]) -> None:
    home = tmp_path / "h"
    doc = invoke_json(
        "run", "--home", str(home), "--study", "h", "--penalties", "l2,none", "--trials", "6",
        "--sampler", "random", "--epochs", str(EPOCHS), "--report-every", str(EVERY),
        "--pruner", "none", "--history", history, "--quiet",
    )  # fmt: skip
    best = {row["mlflow_run_id"] for row in doc["best"]}
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("h")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.`sweeps.role` = 'trial'")
    assert len(runs) == 6 + doc["reused"] and len(best) == 2  # repeats come on top
    for run in runs:
        run_id = run.info.run_id
        if "sweeps.reused_from" in run.data.tags:  # took an identical trial's result:
            steps = {m.step for m in client.get_metric_history(run_id, "val_loss")}
            assert steps == {0} and run_id not in best  # final values; the curves are the
            continue  # source run's (the best of its penalty is the source, never a copy)
        whole = set(range(1, EPOCHS + 1))
        for metric in METRICS:
            steps = {m.step for m in client.get_metric_history(run_id, metric)}
            assert steps == (whole if run_id in best else thinned), (metric, run_id in best)
        local = client.download_artifacts(run_id, HISTORY_FILE, str(tmp_path / run_id))
        curves = read_history_csv(Path(local).read_bytes())
        assert all(len(curves[metric]) == EPOCHS for metric in METRICS)
        for metric in METRICS:  # the file and the metrics say the same (to float32)
            logged = {m.step: m.value for m in client.get_metric_history(run_id, metric)}
            assert all(
                curves[metric][step - 1] == float(np.float32(value))
                for step, value in logged.items()
            )


# PostgreSQL logs a write of a metric row already there (a duplicate `metric_pk`), and
# MLflow then drops it quietly; this makes that write fail loudly instead.
_REFUSE_DUPLICATE_POINTS = (
    """CREATE FUNCTION refuse_duplicate_point() RETURNS trigger AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM metrics WHERE run_uuid = NEW.run_uuid AND key = NEW.key
               AND step = NEW.step) THEN
        RAISE EXCEPTION 'a metric point written twice';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER refuse_duplicate_point BEFORE INSERT ON metrics
    FOR EACH ROW EXECUTE FUNCTION refuse_duplicate_point()""",
)


def _execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for sql in statements:
                conn.execute(sa.text(sql))
    finally:
        engine.dispose()


@pytest.fixture
def tracking_url(postgres_database: Callable[[str], str]) -> str:
    """A PostgreSQL database of its own for MLflow (never Optuna's)."""
    return postgres_database("sweeps_test_mlflow")


def _waiting_for_a_lock(url: str) -> bool:
    """Whether a session of this database waits for an advisory lock."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            waiting = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    return bool(waiting)


@pytest.mark.slow
def test_two_processes_ending_together_complete_each_best_curve_once(
    tmp_path: Path, postgres_url: str, tracking_url: str
) -> None:
    env = {**cli_env(tmp_path / "h", postgres_url), "SWEEPS_TRACKING_URI": tracking_url}
    study = ["--study", "c", "--quiet"]
    # The first stops once it has read what the best curve misses, before writing it.
    space = ["--penalties", "none", "--trials", "1", "--epochs", str(EPOCHS), "--history", "final"]
    first = subprocess.Popen(
        sweeps_cmd("run", *study, *space, "--pruner", "none"),
        env={**env, killpoints.STOP_ENV: killpoints.CURVES_READ},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    second: subprocess.Popen[str] | None = None
    try:
        _, status = os.waitpid(first.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), status
        _execute(tracking_url, *_REFUSE_DUPLICATE_POINTS)
        # A worker that starts no trial and ends the study again: it completes the same
        # curve, unless it waits for the first.
        second = subprocess.Popen(
            sweeps_cmd("worker", *study, "--trials", "1", "--timeout", "1e-9"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 300
        while second.poll() is None and not _waiting_for_a_lock(postgres_url):
            assert time.monotonic() < deadline, "the second process neither ended nor waited"
            time.sleep(0.1)
    finally:
        first.send_signal(signal.SIGCONT)
    outputs = [first.communicate(timeout=300), second.communicate(timeout=300)]
    client = MlflowClient(tracking_url)
    experiment = client.get_experiment_by_name("c")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id], "tags.`sweeps.role` = 'trial'")
    histories = {m: client.get_metric_history(run.info.run_id, m) for m in METRICS}
    for proc, (_, err) in zip((first, second), outputs, strict=True):
        assert proc.returncode == 0, err
        assert err == "", err  # no point written twice
    for metric, history in histories.items():
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1)), metric


def test_history_csv_round_trips_to_float32() -> None:
    rng = np.random.default_rng(0)
    history = {m: [float(x) for x in rng.normal(size=30) * 10.0**i] for i, m in enumerate(METRICS)}
    history["val_loss"][3], history["w_norm"][4] = math.inf, math.nan
    history["test_loss"][5] = -1e300  # a float64 task diverging: beyond float32's range
    ragged = {**history, "penalty_value": history["penalty_value"][:29]}  # diverged early
    for written in (history, ragged):
        back = read_history_csv(history_csv(written))
        for metric, values in written.items():
            expected = [v if abs(v) > 3.5e38 else float(np.float32(v)) for v in values]
            assert repr(back[metric]) == repr(expected), metric
        assert back["test_loss"][5] == -1e300
    data = history_csv(ragged)
    assert data.decode().splitlines()[0] == "epoch," + ",".join(METRICS)
    assert len(data) < 30 * 80  # ≤ 9 digits a value, not repr's 17


@pytest.mark.parametrize(("scale", "values"), [("log", [0.01, 0.5, 54.0]), ("linear", [1.0, 3.0])])
def test_optuna_plots_go_log_when_values_span_decades(scale: str, values: list[float]) -> None:
    import optuna

    from sweeps.plots import draw_optuna_plots

    study = optuna.create_study()
    for i, value in enumerate(values):
        study.add_trial(
            optuna.trial.create_trial(
                params={"lambda": 10.0**-i},
                distributions={"lambda": optuna.distributions.FloatDistribution(1e-5, 1, log=True)},
                value=value,
            )
        )
    figures = draw_optuna_plots(study)
    assert sorted(figures) == ["optimization_history.png", "param_slices.png"]
    for figure in figures.values():
        objective = [ax for ax in figure.axes if ax.get_ylabel() == "Objective Value"]
        assert objective and {ax.get_yscale() for ax in objective} == {scale}


def test_auto_history_is_final_values_in_large_rounds_only() -> None:
    resolve = HistoryPolicy.resolve
    assert resolve(History.AUTO, 4, 1) == HistoryPolicy(History.CHECKPOINTS, 4)
    assert resolve(History.AUTO, 4, LARGE_ROUND - 1) == HistoryPolicy(History.CHECKPOINTS, 4)
    assert resolve(History.AUTO, 4, LARGE_ROUND) == HistoryPolicy(History.FINAL, 4)
    assert resolve(History.EPOCHS, 4, LARGE_ROUND) == HistoryPolicy(History.EPOCHS, 4)

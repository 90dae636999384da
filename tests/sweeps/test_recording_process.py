"""Rounds written by the recording process while the next round trains
(`sweeps.recording_process.RecordingProcess`): the same study as rounds written in turn, and a
child that never outlives its worker."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from subprocess import Popen
from typing import Any
from urllib.parse import urlparse

import pytest
import torch
from mlflow.tracking import MlflowClient

from sweeps.config import PrunerKind, SweepConfig
from sweeps.recording_process import RECORDING_ENV, RecordingProcess
from sweeps.runner import run_study
from sweeps.storage import resolve_stores
from tests.conftest import create_postgres_database, drop_postgres_database
from tests.gate import SPEC, Gate
from tests.sweeps.study_helpers import cli_env, load, run_cli, sweeps_cmd
from tracking.results import ResultsStore
from trainer import Penalty, TrialConfig

pytestmark = pytest.mark.slow


def _study(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    overlap: bool,
    storage: str | None = None,
    track: bool = True,
) -> list[Any]:
    """A TPE study in rounds of 4 with pruning, in `storage` (SQLite in `home` when
    None); the recording processes that ran."""
    monkeypatch.setenv(RECORDING_ENV, "1" if overlap else "0")
    started: list[Any] = []
    start = RecordingProcess.start

    def spy(recorder: Any) -> RecordingProcess | None:
        process = start(recorder)
        started.append(process)
        return process

    monkeypatch.setattr(RecordingProcess, "start", spy)
    cfg = SweepConfig(
        study="s",
        base=TrialConfig(epochs=6),
        # No parameterless `none`: its repeats would take results and add rounds beyond
        # the four of 4 the tests below count on.
        penalties=(Penalty.L1, Penalty.L2, Penalty.WEIGHT_DECAY),
        trials=16,
        batch=4,
        pruner=PrunerKind.MEDIAN,
        report_every=2,
    )
    stores = resolve_stores(str(home), storage, None)
    outcome = run_study(cfg, stores, quiet=True, track=track)
    assert sum(outcome.counts.values()) == 16 and outcome.reused == 0
    return [p for p in started if p is not None]


def _trials(storage: str) -> list[tuple[Any, ...]]:
    study = load("s", storage)
    return [(t.number, t.state, t.params, t.values, t.intermediate_values) for t in study.trials]


def _rows(storage: str) -> list[tuple[Any, ...]]:
    """The results rows, without what differs between any two runs (times, run ids)."""
    rows = ResultsStore(storage).trials("s")
    varying = {"created_at", "duration_s", "mlflow_run_id"}
    return [tuple((k, v) for k, v in row.items() if k not in varying) for row in rows]


def _runs_of(
    home: Path, study: str = "s"
) -> dict[int, tuple[str, dict[str, float], dict[str, list[float]]]]:
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(study)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.`sweeps.role` = 'trial'")
    metrics = {"train_loss", "val_loss", "test_loss", "w_norm", "value"}
    return {
        int(r.data.tags["sweeps.trial_number"]): (
            r.info.status,
            {k: v for k, v in r.data.metrics.items() if k in metrics},
            _weights(r.info.artifact_uri),
        )
        for r in runs
    }


def _weights(artifact_uri: str) -> dict[str, list[float]]:
    """The run's model_state_dict.pt, as torch.load reads it ({} for a trial that took
    an earlier one's result: it trained no model)."""
    path = Path(urlparse(artifact_uri).path) / "model_state_dict.pt"
    if not path.exists():
        return {}
    state = torch.load(path, weights_only=True)
    return {k: v.flatten().tolist() for k, v in state.items()}


@pytest.fixture(params=["sqlite", "postgres"])
def two_storages(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str | None]]:
    """Where the overlapped and the in-turn study keep Optuna and the results: each its
    own SQLite file (None: in its home), or each its own PostgreSQL database."""
    if request.param == "sqlite":
        yield [None, None]
        return
    made = [create_postgres_database() for _ in range(2)]
    try:
        yield [url for url, _ in made]
    finally:
        for url, admin in made:
            drop_postgres_database(url, admin)


def test_overlapped_rounds_make_the_study_rounds_in_turn_make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, two_storages: list[str | None]
) -> None:
    """Each round is planned with the results of the one being written, so the proposals,
    pruning decisions, values and MLflow runs are those of rounds written in turn; the
    recording process tells Optuna through its own connection, on either database."""
    overlapped, in_turn = tmp_path / "overlapped", tmp_path / "in_turn"
    storages = [
        url or f"sqlite:///{home / 'sweeps.db'}"
        for url, home in zip(two_storages, (overlapped, in_turn), strict=True)
    ]
    assert len(_study(overlapped, monkeypatch, overlap=True, storage=two_storages[0])) == 1
    assert _study(in_turn, monkeypatch, overlap=False, storage=two_storages[1]) == []
    assert _trials(storages[0]) == _trials(storages[1])
    assert _rows(storages[0]) == _rows(storages[1])
    runs = _runs_of(overlapped)
    assert runs == _runs_of(in_turn) and sorted(runs) == list(range(16))
    assert sum(bool(weights) for _, _, weights in runs.values()) >= 8  # serialized there
    done = run_cli("check", "--study", "s", env=cli_env(overlapped, storages[0]))
    assert done.returncode == 0 and "consistent" in done.stdout, done.stdout + done.stderr


def test_an_untracked_study_is_recorded_beside_training_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, two_storages: list[str | None]
) -> None:
    """Without MLflow the recording process writes the results rows and tells Optuna:
    the same study as in turn, with nothing of MLflow's made."""
    overlapped, in_turn = tmp_path / "overlapped", tmp_path / "in_turn"
    storages = [
        url or f"sqlite:///{home / 'sweeps.db'}"
        for url, home in zip(two_storages, (overlapped, in_turn), strict=True)
    ]
    started = _study(overlapped, monkeypatch, True, two_storages[0], track=False)
    assert len(started) == 1
    assert _study(in_turn, monkeypatch, False, two_storages[1], track=False) == []
    assert _trials(storages[0]) == _trials(storages[1])
    rows = _rows(storages[0])
    assert rows == _rows(storages[1]) and len(rows) == 16
    assert not (overlapped / "mlflow.db").exists()
    done = run_cli("check", "--study", "s", "--no-track", env=cli_env(overlapped, storages[0]))
    assert done.returncode == 0 and "consistent" in done.stdout, done.stdout + done.stderr


def test_a_round_told_before_the_next_is_asked_is_known_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recording process may tell a round before the study process asks the next (a
    busy machine): the next round is still planned with each of its trials once, not
    from the storage's copy and the study process's preview both."""
    submit = RecordingProcess.submit

    def submit_and_wait_for_the_tell(
        self: RecordingProcess, recs: list[Any], weights: Any, tell: Any
    ) -> None:
        submit(self, recs, weights, tell)
        ids = [row.trial_id for row in tell]
        study = load("s", f"sqlite:///{tmp_path / 'told_first' / 'sweeps.db'}")
        deadline = time.monotonic() + 120  # only against a hang: the child tells in ms
        while any(t._trial_id in ids and not t.state.is_finished() for t in study.trials):
            assert time.monotonic() < deadline, "the recording process never told the round"
            time.sleep(0.01)

    monkeypatch.setattr(RecordingProcess, "submit", submit_and_wait_for_the_tell)
    assert len(_study(tmp_path / "told_first", monkeypatch, True, track=False)) == 1
    monkeypatch.setattr(RecordingProcess, "submit", submit)
    assert _study(tmp_path / "in_turn", monkeypatch, False, track=False) == []
    assert _trials(f"sqlite:///{tmp_path / 'told_first' / 'sweeps.db'}") == _trials(
        f"sqlite:///{tmp_path / 'in_turn' / 'sweeps.db'}"
    )


@pytest.mark.parametrize("drawn", ["every trial", "one trial short"])
def test_the_end_figures_drawn_while_the_last_round_is_written_are_the_studys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drawn: str
) -> None:
    """The parent run's figures drawn ahead, from the trials as the study process holds
    them, are those drawn from the stores afterwards; drawn of other trials than the
    stores hold at the end (another worker's finished since), they are drawn again."""
    import sweeps.plots
    from sweeps.recording import Recorder
    from sweeps.records import record_from_row
    from tracking.figures import lambda_figure

    ahead, from_stores = [], []
    draw_ahead, optuna_plots = Recorder.draw_ahead, sweeps.plots.optuna_plots

    def spy_ahead(self: Recorder, study: Any, trials: list[Any]) -> None:
        ahead.append(len(trials))
        draw_ahead(self, study, trials if drawn == "every trial" else trials[:-1])

    def spy_plots(study: Any, trials: list[Any] | None = None) -> dict[str, bytes]:
        if trials is None:
            from_stores.append(study)
        return optuna_plots(study, trials)

    monkeypatch.setattr(Recorder, "draw_ahead", spy_ahead)
    monkeypatch.setattr(sweeps.plots, "optuna_plots", spy_plots)
    home = tmp_path / "h"
    assert len(_study(home, monkeypatch, overlap=True)) == 1
    assert ahead == [16]  # once, with the whole study: the last round as it will be told
    assert len(from_stores) == (0 if drawn == "every trial" else 1)

    storage = f"sqlite:///{home / 'sweeps.db'}"
    rows = ResultsStore(storage).trials("s")
    expected = {
        **optuna_plots(load("s", storage)),
        "lambda_curves.png": lambda_figure([record_from_row("s", row) for row in rows]),
    }
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("s")
    assert experiment is not None
    [parent] = client.search_runs([experiment.experiment_id], "tags.`sweeps.role` = 'parent'")
    folder = Path(urlparse(parent.info.artifact_uri).path)
    assert {name: (folder / name).read_bytes() for name in expected} == expected


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent has not reaped it


@contextmanager
def _second_round_held(tmp_path: Path, study: str) -> Iterator[tuple[Popen[str], Path]]:
    """`sweeps run` of a tracked study in rounds of 2, its second round held in training
    (the gate) while the first is with the recording process; killed afterwards if alive."""
    gate = Gate(tmp_path / "gate")
    gate.hold(2)  # builds: 0 the pre-flight check, 1 round 1, 2 round 2
    home = tmp_path / "h"
    args = ["--study", study, "--task", SPEC, "--penalties", "none,l2", "--epochs", "2"]
    proc = subprocess.Popen(
        sweeps_cmd("run", *args, "--trials", "6", "--batch", "2", "--quiet"),
        env=cli_env(home, **gate.env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        gate.wait_until_held()
        yield proc, home
    finally:
        gate.release()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_the_recording_process_dies_with_its_worker(tmp_path: Path) -> None:
    """A worker killed whole leaves no writer behind to race a resume's healing."""
    with _second_round_held(tmp_path, "g") as (proc, _):
        children = _children(proc.pid)
        assert len(children) == 1, children
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 60  # only against a hang: it dies with its parent
        while _alive(children[0]):
            assert time.monotonic() < deadline, "the recording process outlived its worker"
            time.sleep(0.05)


def test_ctrl_c_tells_the_written_round_and_fails_the_interrupted_one(tmp_path: Path) -> None:
    with _second_round_held(tmp_path, "i") as (proc, home):
        proc.send_signal(signal.SIGINT)  # the recording process ignores it: it finishes
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    study = load("i", f"sqlite:///{home / 'sweeps.db'}")
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]  # no third round started
    runs = {n: status for n, (status, _, _) in _runs_of(home, "i").items()}
    assert runs == {0: "FINISHED", 1: "FINISHED", 2: "FAILED", 3: "FAILED"}
    done = run_cli("check", "--study", "i", env=cli_env(home))
    assert done.returncode == 0 and "consistent" in done.stdout, done.stdout + done.stderr

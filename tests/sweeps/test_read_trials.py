"""`sweeps._optuna.read.read_trials` builds the trials Optuna's storage builds, from the same
rows: every state, value kind, distribution and attribute, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState

from sweeps._optuna.read import Snapshot, read_trials
from sweeps.plots import draw_optuna_plots


def _engine(study: optuna.Study) -> sa.Engine:
    engine: sa.Engine = study._storage._backend.engine  # type: ignore[attr-defined]
    return engine


def _suggest(trial: optuna.Trial) -> None:
    trial.suggest_categorical("penalty", ["none", "l2"])
    trial.suggest_float("lambda", 1e-5, 100.0, log=True)
    trial.suggest_int("width", 1, 64, step=3)
    trial.suggest_float("ratio", 0.0, 1.0)


def _every_kind(study: optuna.Study) -> None:
    """Trials in every state, with every kind of stored value."""
    for value in (1.5, math.inf, -math.inf):
        trial = study.ask()
        _suggest(trial)
        trial.set_user_attr("record", {"final": {"loss": value if math.isfinite(value) else 0}})
        study.tell(trial, value)
    pruned = study.ask()
    _suggest(pruned)
    for step, value in enumerate((3.0, math.inf, -math.inf, math.nan, 0.25)):
        pruned.report(value, step)
    pruned.set_user_attr("note", "pruned")
    study.tell(pruned, state=TrialState.PRUNED)
    failed = study.ask()
    _suggest(failed)
    failed.storage.set_trial_system_attr(failed._trial_id, "fail_reason", "boom")
    study.tell(failed, state=TrialState.FAIL)
    running = study.ask()
    _suggest(running)
    running.report(7.0, 1)
    study.enqueue_trial({"penalty": "l2", "lambda": 0.5}, user_attrs={"from": "queue"})


def _compare(study: optuna.Study) -> None:
    expected = study._storage._backend.get_all_trials(study._study_id, deepcopy=False)  # type: ignore[attr-defined]
    got = read_trials(_engine(study), study._study_id)
    assert [repr(t) for t in got] == [repr(t) for t in expected]  # repr: NaN == NaN
    assert [t._trial_id for t in got] == [t._trial_id for t in expected]


@pytest.fixture
def away_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A local time zone other than UTC: Optuna stores UTC and reads back local time."""
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("away_from_utc")
def test_read_trials_are_optunas(storage_url: str) -> None:
    study = optuna.create_study(storage=storage_url, sampler=optuna.samplers.RandomSampler(0))
    _every_kind(study)
    assert {t.state for t in study.get_trials(deepcopy=False)} == set(TrialState)
    _compare(study)


def test_multi_objective_values_keep_their_order(storage_url: str) -> None:
    study = optuna.create_study(storage=storage_url, directions=["minimize", "maximize"])
    for values in ((1.0, 2.0), (math.inf, -1.0)):
        trial = study.ask()
        _suggest(trial)
        study.tell(trial, values)
    _compare(study)


def test_chosen_ids_and_states_read_only_those(storage_url: str) -> None:
    study = optuna.create_study(storage=storage_url)
    other = optuna.create_study(storage=storage_url)  # same tables, another study
    for s in (study, other):
        _every_kind(s)
    engine = _engine(study)
    every = read_trials(engine, study._study_id)
    some = [every[0]._trial_id, every[3]._trial_id, _engine(other) and 10**9]
    assert [t.number for t in read_trials(engine, study._study_id, ids=some)] == [0, 3]
    states = (TrialState.COMPLETE, TrialState.PRUNED)
    assert [t.number for t in read_trials(engine, study._study_id, states=states)] == [
        t.number for t in every if t.state in states
    ]


def test_chosen_ids_past_one_statements_parameters(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = optuna.create_study(storage=storage_url)
    for value in range(7):
        trial = study.ask()
        _suggest(trial)
        study.tell(trial, float(value))
    monkeypatch.setattr("sweeps._optuna.read._CHUNK", 3)  # 7 ids: three statements
    ids = [t._trial_id for t in study.get_trials(deepcopy=False)]
    got = read_trials(_engine(study), study._study_id, ids=reversed(ids))  # type: ignore[arg-type]
    assert [t._trial_id for t in got] == ids


def _without_user_attrs(trial: FrozenTrial) -> FrozenTrial:
    trial = copy.deepcopy(trial)
    trial.user_attrs = {}
    return trial


def test_a_snapshot_plots_what_the_study_plots(storage_url: str) -> None:
    study = optuna.create_study(storage=storage_url, sampler=optuna.samplers.RandomSampler(0))
    _every_kind(study)
    whole = Snapshot.read(_engine(study), study, user_attrs=True)
    assert repr(whole.get_trials()) == repr(study.get_trials())  # repr: NaN == NaN
    snapshot = Snapshot.read(_engine(study), study, user_attrs=False)
    assert [t.user_attrs for t in snapshot.get_trials()] == [{}] * len(study.trials)
    assert any(t.user_attrs for t in study.trials)
    assert repr(snapshot.get_trials()) == repr([_without_user_attrs(t) for t in study.trials])
    complete = (TrialState.COMPLETE,)
    assert snapshot.get_trials(states=complete) == [
        _without_user_attrs(t) for t in study.get_trials(states=complete)
    ]

    def drawn(s: optuna.Study) -> list[list[object]]:
        figures = draw_optuna_plots(s)
        return [
            [line.get_xydata().tolist() for ax in f.axes for line in ax.lines]  # type: ignore[union-attr]
            + [c.get_offsets().tolist() for ax in f.axes for c in ax.collections]  # type: ignore[attr-defined]
            for f in figures.values()
        ]

    assert drawn(snapshot) == drawn(study) != []

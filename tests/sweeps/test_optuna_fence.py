"""Every use of Optuna's private names has a public path: forced by SWEEPS_OPTUNA_PUBLIC=1
it gives the same results; taken because a private name is gone, it warns once."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from datetime import datetime

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

import sweeps._optuna
from sweeps._optuna import (
    FORCE_PUBLIC_ENV,
    fenced,
    frozen_trial_id,
    rdb_backend,
    storage_of,
    study_id,
    trial_id,
)
from sweeps._optuna.ask_view import AskView
from sweeps.cli.process import quiet_optuna
from sweeps.pruning import PruningView, Reports
from sweeps.sampling import GridSampler
from sweeps.storage import fail_lost_trials, lost_trials, open_storage


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees its own first fallback (the set is per process)."""
    monkeypatch.setattr(sweeps._optuna.OPTUNA, "warned", set())
    monkeypatch.delenv(FORCE_PUBLIC_ENV, raising=False)


@pytest.fixture
def storage(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[optuna.storages.RDBStorage]:
    quiet_optuna()
    monkeypatch.setenv("SWEEPS_HEARTBEAT_S", "1")  # grace period: 2 s
    opened = open_storage(storage_url)
    yield opened
    opened.engine.dispose()  # before the test database is dropped


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _gone(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """Importing `module` fails from now on, as after an Optuna upgrade that removed it
    (the fenced modules importing it are imported again)."""
    monkeypatch.setitem(sys.modules, module, None)
    parent, _, name = module.rpartition(".")
    monkeypatch.delattr(sys.modules[parent], name, raising=False)
    for name in [n for n in sys.modules if n.startswith("sweeps._optuna.")]:
        if name != "sweeps._optuna.ask_view":
            monkeypatch.delitem(sys.modules, name)


# --- accessors -------------------------------------------------------------------------


def test_ids_are_the_same_by_the_public_path(
    storage: optuna.storages.RDBStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = optuna.create_study(storage=storage)
    study.ask()
    trial = study.ask()
    frozen = study.trials[trial.number]
    fast = (study_id(study, storage), trial_id(trial), frozen_trial_id(frozen, study, storage))
    monkeypatch.setenv(FORCE_PUBLIC_ENV, "1")
    public = (study_id(study, storage), trial_id(trial), frozen_trial_id(frozen, study, storage))
    assert fast == public
    assert fast[1] == storage.get_trial_id_from_study_id_trial_number(fast[0], 1)


def test_a_gone_trial_id_warns_once(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    quiet_optuna()
    study = optuna.create_study()
    trials = [study.ask(), study.ask()]
    expected = [trial_id(t) for t in trials]
    for trial in trials:
        monkeypatch.delattr(trial, "_trial_id")
    assert [trial_id(t) for t in trials] == expected
    assert len(_warnings(caplog)) == 1 and "_trial_id" in _warnings(caplog)[0]


def test_the_storage_passed_in_needs_no_private_name(
    storage: optuna.storages.RDBStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = optuna.create_study(storage=storage)
    assert rdb_backend(study, "test") is storage  # through Study._storage
    monkeypatch.delattr(study, "_storage")
    assert storage_of(study) is None
    assert rdb_backend(study, "test", storage) is storage


# --- the fenced modules: a private module gone -----------------------------------------


def test_reports_without_optuna_models_use_trial_report(
    storage: optuna.storages.RDBStorage,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    study = optuna.create_study(storage=storage)
    assert Reports.of(study).writer is not None
    _gone(monkeypatch, "optuna.storages._rdb.models")
    first, second = Reports.of(study), Reports.of(study, storage)
    assert first.writer is None and second.writer is None
    trial = study.ask()
    first.add([(trial, 3, 0.25)])
    assert study.trials[trial.number].intermediate_values == {3: 0.25}  # at once
    [warning] = _warnings(caplog)
    assert "writing pruning reports" in warning and "optuna.storages._rdb.models" in warning


def test_reports_by_the_public_path_store_the_same(
    storage: optuna.storages.RDBStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = optuna.create_study(storage=storage)
    values = [(1, 0.5), (2, float("inf")), (4, -2.0)]
    fast_trial, public_trial = study.ask(), study.ask()
    fast = Reports.of(study)
    fast.add([(fast_trial, step, v) for step, v in values])
    fast.flush()
    monkeypatch.setenv(FORCE_PUBLIC_ENV, "1")
    public = Reports.of(study)
    assert public.writer is None
    public.add([(public_trial, step, v) for step, v in values])
    trials = study.trials
    assert trials[fast_trial.number].intermediate_values == dict(values)
    assert trials[public_trial.number].intermediate_values == dict(values)


def test_fenced_without_a_private_module_warns_once(
    storage: optuna.storages.RDBStorage,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    study = optuna.create_study(storage=storage)
    _gone(monkeypatch, "optuna.storages._rdb.models")

    def make(engine: sa.Engine) -> object:
        from sweeps._optuna.read import TrialCache

        return TrialCache(engine, study)

    assert fenced(study, "reading", make) is None and fenced(study, "reading", make) is None
    assert len(_warnings(caplog)) == 1


# --- lost trials -----------------------------------------------------------------------


def _stale_study(storage: optuna.storages.RDBStorage, name: str) -> tuple[optuna.Study, int]:
    """A study with one RUNNING trial whose last heartbeat is long past."""
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler)
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    tid = trial_id(trial)  # not inside the transaction below: the storage's one connection
    storage.record_heartbeat(tid)
    beats = sa.table("trial_heartbeats", sa.column("trial_id"), sa.column("heartbeat", sa.DateTime))
    with storage.engine.begin() as conn:
        conn.execute(
            sa.update(beats).where(beats.c.trial_id == tid).values(heartbeat=datetime(2000, 1, 1))
        )
    return study, trial.number


def _outcome(study: optuna.Study) -> list[tuple[TrialState, dict[str, object]]]:
    return [(t.state, t.params) for t in study.get_trials(deepcopy=False)]


def test_lost_trials_by_the_public_path_fail_and_retry_the_same(
    storage: optuna.storages.RDBStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, number = _stale_study(storage, "fast")
    assert [t.number for t in lost_trials(fast, storage)] == [number]
    assert fail_lost_trials(fast, storage) == [number]
    monkeypatch.setenv(FORCE_PUBLIC_ENV, "1")
    public, number = _stale_study(storage, "public")
    assert fail_lost_trials(public, storage) == [number]
    assert _outcome(fast) == _outcome(public)
    assert [s for s, _ in _outcome(public)] == [TrialState.FAIL, TrialState.WAITING]  # retried


def test_lost_trials_without_optuna_models_warn_once(
    storage: optuna.storages.RDBStorage,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    study, number = _stale_study(storage, "gone")
    _gone(monkeypatch, "optuna.storages._rdb.models")
    assert lost_trials(study, storage) == []  # cannot be listed without Optuna's tables
    assert fail_lost_trials(study, storage) == [number]  # Optuna's fail_stale_trials
    [warning] = _warnings(caplog)
    assert "finding lost trials" in warning


# --- the ask view ----------------------------------------------------------------------


def _asked(study: optuna.Study, k: int) -> list[dict[str, object]]:
    view = AskView(study)
    params = []
    with view.serving():
        for _ in range(k):
            trial = study.ask()
            view.asking(trial)
            trial.suggest_float("x", 0.0, 1.0)
            view.asked(trial)
            params.append(trial.params)
    return params


def _seeded_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    sampler = optuna.samplers.TPESampler(seed=1, n_startup_trials=3)
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler)
    for i in range(5):
        trial = study.ask()
        study.tell(trial, (trial.suggest_float("x", 0.0, 1.0) - 0.3) ** 2 + i / 100)
    return study


@pytest.mark.parametrize("why", ["forced", "gone"])
def test_the_ask_view_by_the_public_path_asks_the_same(
    tmp_path: object,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    why: str,
) -> None:
    quiet_optuna()
    storage = optuna.storages.InMemoryStorage()
    fast = _asked(_seeded_study(storage, "fast"), 4)
    if why == "forced":
        monkeypatch.setenv(FORCE_PUBLIC_ENV, "1")
    else:
        monkeypatch.setattr(sweeps._optuna.ask_view, "TRIAL_NAMES", ("_trial_id", "_gone"))
    study = _seeded_study(storage, "public")
    assert not AskView(study)._shadow
    assert _asked(study, 4) == fast
    warnings = _warnings(caplog)
    if why == "forced":  # asked for: not announced
        assert warnings == []
    else:
        assert len(warnings) == 1 and "_gone" in warnings[0]


# --- public replacements ---------------------------------------------------------------


def test_the_grid_sampler_tells_the_last_point_without_stopping() -> None:
    quiet_optuna()
    for sampler, stops in ((optuna.samplers.BruteForceSampler(), True), (GridSampler(), False)):
        study = optuna.create_study(sampler=sampler)
        for _ in range(2):
            trial = study.ask()
            value = trial.suggest_categorical("x", [1, 2])
        if stops:  # why the subclass exists: Optuna's stops a study it is not optimizing
            with pytest.raises(RuntimeError, match=r"Study\.stop"):
                study.tell(trial, value)
        else:
            study.tell(trial, value)
        assert study.trials[-1].state is TrialState.COMPLETE


def test_the_stale_trial_callback_is_given_to_the_storage(tmp_path: object) -> None:
    seen: list[object] = []

    def on_stale(retry: object) -> object:
        seen.append(retry)
        return lambda study, trial: None

    storage = open_storage(f"sqlite:///{tmp_path}/s.db", on_stale)  # type: ignore[arg-type]
    [retry] = seen
    assert isinstance(retry, optuna.storages.RetryHeartbeatStaleTrialCallback)
    assert storage.get_heartbeat_stale_trial_callback() is not retry
    assert open_storage(f"sqlite:///{tmp_path}/t.db").get_heartbeat_stale_trial_callback()


def test_the_pruner_decides_on_the_snapshot_it_holds() -> None:
    """With one completed trial held (of three), the median pruner waits for its second
    startup trial; against the study it would prune."""
    quiet_optuna()
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    for final in (1.0, 10.0, 100.0):
        trial = study.ask()
        trial.report(final, 1)
        study.tell(trial, final)
    running = study.ask()
    running.report(50.0, 1)
    assert running.should_prune()
    view = PruningView(study)
    view.use(study.get_trials(states=(TrialState.COMPLETE,))[:1])
    assert not view(running)
    view.refresh()
    assert view(running)

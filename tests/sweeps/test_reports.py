"""Checkpoint reports written in one statement store what `Trial.report` stores."""

from __future__ import annotations

import math
from collections.abc import Iterator

import optuna
import pytest

import sweeps._optuna
from sweeps import pruning
from sweeps.cli.process import quiet_optuna
from sweeps.pruning import Reports
from sweeps.storage import open_storage

VALUES = {0: 0.5, 1: math.inf, 2: -math.inf, 3: math.nan, 5: 1e-300, 7: -2.0}


@pytest.fixture
def study(storage_url: str) -> Iterator[optuna.Study]:
    quiet_optuna()
    storage = open_storage(storage_url)
    yield optuna.create_study(storage=storage)
    storage.engine.dispose()  # before the test database is dropped


def _stored(study: optuna.Study, trial: optuna.Trial) -> dict[int, str]:
    """What Optuna reads back from the storage; repr so that NaN equals NaN."""
    got = study._storage.get_trial(trial._trial_id).intermediate_values
    return {step: repr(value) for step, value in got.items()}


def test_reports_read_back_as_optuna_stores_them(study: optuna.Study) -> None:
    ours, other, plain = study.ask(), study.ask(), study.ask()
    writer = Reports.of(study)
    assert writer.engine is not None  # both backends are at a tested revision
    writer.add([(t, step, v) for step, v in VALUES.items() for t in (ours, other)])
    assert _stored(study, ours) == {}  # until the round ends (or FLUSH_AFTER_S passed)
    writer.flush()
    for step, value in VALUES.items():
        plain.report(value, step)
    assert _stored(study, ours) == _stored(study, other) == _stored(study, plain)
    assert len(_stored(study, ours)) == len(VALUES)
    # The trial's own copy, which the pruner reads, matches Trial.report's.
    assert repr(ours._cached_frozen_trial.intermediate_values) == repr(
        plain._cached_frozen_trial.intermediate_values
    )


def test_a_step_reported_before_is_kept(study: optuna.Study) -> None:
    trial = study.ask()
    writer = Reports.of(study)
    writer.add([(trial, 1, 5.0)])
    writer.add([(trial, 1, 7.0), (trial, 2, 8.0)])
    writer.flush()
    assert _stored(study, trial) == {1: "5.0", 2: "8.0"}
    # Even when the Trial object does not know it (another process reported it).
    fresh = optuna.Trial(study, trial._trial_id)
    writer.add([(fresh, 2, 9.0)])
    writer.flush()
    assert _stored(study, trial) == {1: "5.0", 2: "8.0"}


def test_nothing_is_stored_for_a_finished_trial(study: optuna.Study) -> None:
    trial = study.ask()
    study.tell(trial, state=optuna.trial.TrialState.FAIL)  # e.g. failed as stale elsewhere
    writer = Reports.of(study)
    writer.add([(trial, 1, 5.0)])
    writer.flush()
    assert _stored(study, trial) == {}


def test_an_untested_schema_falls_back_to_trial_report(
    study: optuna.Study, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweeps._optuna, "TESTED_SCHEMA_REVISIONS", frozenset({"v9.9.9"}))
    writer = Reports.of(study)
    assert writer.engine is None
    trial = study.ask()
    writer.add([(trial, 3, 0.25)])
    assert _stored(study, trial) == {3: "0.25"}  # at once, as Trial.report does


def test_reports_waiting_too_long_are_written_without_a_flush(
    study: optuna.Study, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long trial's curve reaches the storage (and a dashboard) within FLUSH_AFTER_S."""
    monkeypatch.setattr(pruning, "FLUSH_AFTER_S", 0.0)
    trial = study.ask()
    Reports.of(study).add([(trial, 1, 5.0)])
    assert _stored(study, trial) == {1: "5.0"}

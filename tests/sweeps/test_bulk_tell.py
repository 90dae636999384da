"""A round told in one transaction stores what `Study.tell` and `set_user_attr` store."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from sweeps._optuna import FORCE_PUBLIC_ENV, Told, rdb_backend, storage_of, trial_id
from sweeps._optuna.tell import BulkTeller
from sweeps.asking import fenced_for
from sweeps.config import SweepConfig
from sweeps.telling import bulk_teller
from tests.sweeps.study_helpers import sweep_study
from trainer import Penalty

CFG = SweepConfig(study="told", penalties=(Penalty.L2,))
RECORD = {"state": "COMPLETE", "params": {"lambda": 0.5}, "error": None, "note": "ünï"}
# (state, objective, reports): each kind of end Optuna's tell distinguishes.
ENDS: list[tuple[TrialState, float | None, dict[int, float]]] = [
    (TrialState.COMPLETE, 0.25, {}),
    (TrialState.COMPLETE, 1e300, {3: 2.0}),
    (TrialState.PRUNED, None, {1: 5.0, 4: 3.5}),  # value: the last report
    (TrialState.PRUNED, None, {2: math.nan}),  # a NaN last report: no value
    (TrialState.PRUNED, None, {}),
    (TrialState.FAIL, None, {1: 1.0}),
]


@pytest.fixture
def study(storage_url: str) -> Iterator[optuna.Study]:
    with sweep_study(storage_url, CFG) as study:
        yield study


def _asked(study: optuna.Study, reports: dict[int, float]) -> optuna.Trial:
    trial = study.ask()
    trial.suggest_float("lambda", 1e-3, 1.0, log=True)
    for step, value in reports.items():
        trial.report(value, step)
    return trial


def _read(study: optuna.Study, trial: optuna.Trial) -> dict[str, Any]:
    """What a fresh Optuna reads back (repr: NaN equals NaN)."""
    again = optuna.load_study(study_name=study.study_name, storage=storage_of(study))
    frozen = storage_of(again).get_trial(trial_id(trial))
    return {
        "state": frozen.state,
        "values": repr(frozen.values),
        "user_attrs": frozen.user_attrs,
        "intermediate": repr(frozen.intermediate_values),
        "completed": frozen.datetime_complete is not None,
    }


def test_bulk_tell_reads_back_as_optuna_tells(study: optuna.Study) -> None:
    teller = fenced_for(study, "test", bulk_teller)
    assert isinstance(teller, BulkTeller)  # both backends are at a tested revision
    ours = [_asked(study, reports) for _, _, reports in ENDS]
    theirs = [_asked(study, reports) for _, _, reports in ENDS]
    got = teller.tell(
        study,
        [
            Told(trial, state, value, {"sweeps.record": RECORD})
            for trial, (state, value, _) in zip(ours, ENDS, strict=True)
        ],
    )
    for trial, (state, value, _) in zip(theirs, ENDS, strict=True):
        trial.set_user_attr("sweeps.record", RECORD)
        study.tell(trial, value, state=state)
    for mine, plain, frozen in zip(ours, theirs, got, strict=True):
        assert _read(study, mine) == _read(study, plain)
        # What the caller gets back is what the storage now holds.
        stored = storage_of(study).get_trial(trial_id(mine))
        assert (frozen.state, repr(frozen.values), frozen.user_attrs) == (
            stored.state,
            repr(stored.values),
            stored.user_attrs,
        )
        assert abs((frozen.datetime_complete - stored.datetime_complete).total_seconds()) < 1e-3


def test_a_trial_ended_elsewhere_is_left_as_it_is(study: optuna.Study) -> None:
    teller = fenced_for(study, "test", bulk_teller)
    assert teller is not None
    lost, kept = _asked(study, {}), _asked(study, {})
    storage_of(study).set_trial_state_values(trial_id(lost), TrialState.FAIL)  # e.g. stale
    got = teller.tell(
        study,
        [Told(t, TrialState.COMPLETE, 1.0, {"sweeps.record": RECORD}) for t in (lost, kept)],
    )
    assert [t.state for t in got] == [TrialState.FAIL, TrialState.COMPLETE]
    assert _read(study, lost)["values"] == "None" and _read(study, lost)["user_attrs"] == {}
    assert _read(study, kept)["values"] == "[1.0]"


def test_the_public_path_when_forced_or_not_tpe(
    study: optuna.Study, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FORCE_PUBLIC_ENV, "1")
    assert rdb_backend(study, "test") is None and fenced_for(study, "test", bulk_teller) is None
    monkeypatch.delenv(FORCE_PUBLIC_ENV)
    study.sampler = optuna.samplers.RandomSampler()
    assert (
        fenced_for(study, "test", bulk_teller) is None
    )  # tested with the round sampler's after_trial only

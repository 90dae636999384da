"""A round's trials created in one transaction are what `Study.ask` + `suggest` create."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
from optuna.trial import FixedTrial, TrialState

from sweeps._optuna import storage_of, trial_id
from sweeps._optuna.ask import TRIAL_ATTRIBUTES, BulkAsker
from sweeps.asking import _bulk_asker, fenced_for
from sweeps.cli.process import quiet_optuna
from sweeps.config import SweepConfig
from sweeps.sampling import suggest
from sweeps.storage import open_storage
from sweeps.study import create_or_load
from tests.sweeps.study_helpers import sweep_study
from trainer import Penalty

CFG = SweepConfig(study="asked", penalties=(Penalty.NONE, Penalty.L2, Penalty.ELASTIC_NET))
PROPOSALS: list[dict[str, Any]] = [
    {"penalty": "l2", "lambda": 0.5},
    {"penalty": "none"},
    {"penalty": "elastic_net", "lambda": 3e-4, "l1_ratio": 0.25},
]


@pytest.fixture
def study(storage_url: str) -> Iterator[optuna.Study]:
    with sweep_study(storage_url, CFG) as study:
        yield study


def _planned(proposals: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    fixed = [FixedTrial(p) for p in proposals]
    for trial in fixed:
        suggest(trial, CFG)
    return [(f.params, f.distributions) for f in fixed]


def _public(study: optuna.Study, params: dict[str, Any]) -> optuna.Trial:
    """The same parameters the public way: a trial asked, the space suggested; the values
    pinned through the sampler so that nothing but the write path differs."""
    trial = study.ask()
    fixed = optuna.samplers.PartialFixedSampler(params, study.sampler)
    study.sampler, before = fixed, study.sampler
    try:
        suggest(trial, CFG)
    finally:
        study.sampler = before
    return trial


def test_bulk_ask_reads_back_as_optuna_asks(study: optuna.Study) -> None:
    asker = fenced_for(study, "test", _bulk_asker)
    assert isinstance(asker, BulkAsker)  # both backends are at a tested revision
    ours = asker.ask(study, _planned(PROPOSALS))
    theirs = [_public(study, p) for p in PROPOSALS]
    assert [t.number for t in ours + theirs] == list(range(6))
    again = optuna.load_study(study_name="asked", storage=storage_of(study))
    for mine, plain in zip(ours, theirs, strict=True):
        a, b = (storage_of(again).get_trial(trial_id(t)) for t in (mine, plain))
        assert (a.state, a.params, a.distributions) == (b.state, b.params, b.distributions)
        assert (a.user_attrs, a.intermediate_values, a.values) == ({}, {}, None)
        assert a.state is TrialState.RUNNING and a.datetime_complete is None
        assert a.datetime_start is not None and b.datetime_start is not None
        assert abs((a.datetime_start - b.datetime_start).total_seconds()) < 60
        # The Trial handed back is the one Optuna would build: same attributes, same trial.
        built = mine._cached_frozen_trial
        assert (built.number, built.params, built.distributions) == (
            a.number,
            a.params,
            a.distributions,
        )
        assert abs((built.datetime_start - a.datetime_start).total_seconds()) < 1e-3
        assert set(vars(mine)) == set(vars(plain)) == TRIAL_ATTRIBUTES
    # They behave as Optuna's own: reports, tell.
    ours[0].report(1.5, 2)
    study.tell(ours[0], 0.25)
    assert storage_of(again).get_trial(trial_id(ours[0])).values == [0.25]


def test_concurrent_rounds_number_trials_uniquely(storage_url: str) -> None:
    """Workers asking rounds at once, beside Optuna's own asks: every number once."""
    quiet_optuna()
    create_or_load(CFG, open_storage(storage_url))
    errors: list[BaseException] = []

    def worker(public: bool) -> None:
        storage = open_storage(storage_url)
        try:
            study = optuna.load_study(study_name="asked", storage=storage)
            asker = BulkAsker(storage.engine)
            for _ in range(5):
                if public:
                    _public(study, PROPOSALS[0])
                else:
                    asker.ask(study, _planned(PROPOSALS * 3))
        except BaseException as e:
            errors.append(e)
        finally:
            storage.engine.dispose()

    threads = [threading.Thread(target=worker, args=(i == 0,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    study = optuna.load_study(study_name="asked", storage=open_storage(storage_url))
    numbers = sorted(t.number for t in study.trials)
    assert numbers == list(range(5 + 3 * 5 * 9))

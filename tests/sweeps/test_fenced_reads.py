"""What a round reads and beats through `sweeps._optuna` equals what Optuna's public API
reads and writes: the trial cache, the state counts and the bulk heartbeat."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from optuna.storages._rdb import models
from optuna.trial import FixedTrial, FrozenTrial, TrialState

from sweeps._optuna.ask import BulkAsker
from sweeps._optuna.beat import BulkHeartbeat
from sweeps._optuna.read import TrialCache, read_trials, state_counts
from sweeps.config import SweepConfig
from sweeps.sampling import suggest
from tests.sweeps.study_helpers import sweep_study
from trainer import Penalty

CFG = SweepConfig(study="read", penalties=(Penalty.NONE, Penalty.L2))


@pytest.fixture
def study(storage_url: str) -> Iterator[optuna.Study]:
    with sweep_study(storage_url, CFG) as study:
        yield study


def _engine(study: optuna.Study) -> sa.Engine:
    engine: sa.Engine = study._storage._backend.engine  # type: ignore[attr-defined]
    return engine


def _told(study: optuna.Study, value: float, state: TrialState = TrialState.COMPLETE) -> int:
    trial = study.ask()
    suggest(trial, CFG)
    study.tell(trial, value if state is TrialState.COMPLETE else None, state=state)
    return trial.number


def _reread(study: optuna.Study, numbers: list[int]) -> list[str]:
    fresh = optuna.load_study(study_name=study.study_name, storage=study._storage._backend)  # type: ignore[attr-defined]
    return [repr(t) for t in fresh.get_trials(deepcopy=False) if t.number in numbers]


def test_the_cache_sees_what_others_finish_and_reads_nothing_twice(
    study: optuna.Study, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = TrialCache(_engine(study), study)
    other = optuna.load_study(study_name=study.study_name, storage=study._storage._backend)  # type: ignore[attr-defined]
    running = other.ask()  # another worker's trial, still running below the next ones
    suggest(running, CFG)
    done = [_told(other, 1.0), _told(other, 0.5), _told(other, 0.0, TrialState.PRUNED)]
    cache.refresh()
    assert [t.number for t in cache.finished()] == done
    assert [repr(t) for t in cache.finished()] == _reread(study, done)
    assert [t.number for t in cache.finished((TrialState.COMPLETE,))] == done[:2]

    reads: list[int] = []

    def counted(engine: sa.Engine, study_id: int, **kwargs: Any) -> list[FrozenTrial]:
        reads.extend(kwargs["ids"])
        return read_trials(engine, study_id, **kwargs)

    monkeypatch.setattr("sweeps._optuna.read.read_trials", counted)
    other.tell(running, 2.0)  # the trial below the known ones finishes
    cache.refresh()
    cache.refresh()
    assert reads == [running._trial_id]
    assert [t.number for t in cache.finished()] == sorted([running.number, *done])


def test_the_cache_keeps_what_this_process_told_without_reading_it(
    study: optuna.Study, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = TrialCache(_engine(study), study)
    own = study.ask()
    suggest(own, CFG)
    frozen = study.tell(own, 0.25)
    cache.add([frozen])
    monkeypatch.setattr(
        "sweeps._optuna.read.read_trials", lambda *a, **k: pytest.fail("read a known trial")
    )
    cache.refresh()
    assert cache.finished() == [frozen]


def test_the_cache_tells_of_waiting_trials(study: optuna.Study) -> None:
    cache = TrialCache(_engine(study), study)
    cache.refresh()
    assert not cache.waiting
    study.enqueue_trial({"penalty": "l2", "lambda": 0.1})
    cache.refresh()
    assert cache.waiting and cache.finished() == []


def test_state_counts_are_optunas(study: optuna.Study) -> None:
    for value in (1.0, 2.0):
        _told(study, value)
    _told(study, 0.0, TrialState.PRUNED)
    _told(study, 0.0, TrialState.FAIL)
    study.enqueue_trial({"penalty": "none"})
    suggest(study.ask(), CFG)  # pops the WAITING one: RUNNING
    study.enqueue_trial({"penalty": "none"})
    expected: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        expected[trial.state.name] = expected.get(trial.state.name, 0) + 1
    assert state_counts(_engine(study), study) == expected
    assert set(expected) == {"COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"}


def _beats(engine: sa.Engine) -> dict[int, object]:
    table = models.TrialHeartbeatModel.__table__
    with engine.connect() as conn:
        return {
            row[0]: row[1] for row in conn.execute(sa.select(table.c.trial_id, table.c.heartbeat))
        }


def test_bulk_heartbeats_are_optunas(storage_url: str) -> None:
    """Rows as record_heartbeat leaves them: one per trial, stamped with the database's
    clock, updated in place; a stale one is found stale by Optuna, a fresh one is not."""
    with sweep_study(storage_url, CFG) as study:
        engine = _engine(study)
        asker = BulkAsker(engine)
        fixed = [FixedTrial({"penalty": "none"}) for _ in range(3)]
        for trial in fixed:
            suggest(trial, CFG)
        planned = [(f.params, f.distributions) for f in fixed]
        beaten = asker.ask(study, planned, heartbeat=True)
        quiet = asker.ask(study, planned[:1])
        first = _beats(engine)
        assert set(first) == {t._trial_id for t in beaten}
        ids = [t._trial_id for t in [*beaten, *quiet]]
        BulkHeartbeat(engine).beat(ids)
        second = _beats(engine)
        assert set(second) == set(ids)
        assert all(second[i] >= first[i] for i in first)  # type: ignore[operator]
        backend = study._storage._backend  # type: ignore[attr-defined]
        backend.record_heartbeat(quiet[0]._trial_id)  # Optuna's own beat updates ours
        assert len(_beats(engine)) == len(ids)
        assert backend._get_stale_trial_ids(study._study_id) == []
        table = models.TrialHeartbeatModel.__table__
        with engine.begin() as conn:  # age one beat past the grace period
            old = conn.execute(sa.select(sa.func.now())).scalar_one()
            conn.execute(
                sa.update(table)
                .where(table.c.trial_id == ids[0])
                .values(heartbeat=old.replace(year=old.year - 1))
            )
        assert backend._get_stale_trial_ids(study._study_id) == [ids[0]]

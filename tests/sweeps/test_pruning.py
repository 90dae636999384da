"""`PruningView`: the pruner's own answers, with at most one read of the trials per trial."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from sweeps._optuna import storage_of, trial_id
from sweeps.checkpoints import Checkpoints
from sweeps.cli.process import quiet_optuna
from sweeps.config import PrunerKind, SamplerKind, SweepConfig
from sweeps.lifecycle import RoundOptimizer
from sweeps.pruning import PruningView, Reports, SnapshotPruner
from sweeps.storage import open_storage
from sweeps.study import create_or_load
from tests.sweeps.study_helpers import Unrecorded
from trainer import TrialConfig, load_task

MakeStudy = Callable[[str, optuna.pruners.BasePruner], optuna.Study]


@pytest.fixture
def make_study() -> Iterator[MakeStudy]:
    """Three completed trials reporting 1, 10 and 100 times the step at steps 1 to 5."""
    storages: list[optuna.storages.RDBStorage] = []

    def make(url: str, pruner: optuna.pruners.BasePruner) -> optuna.Study:
        quiet_optuna()
        storages.append(open_storage(url))
        study = optuna.create_study(storage=storages[-1], pruner=pruner)
        for final in (1.0, 10.0, 100.0):
            trial = study.ask()
            for step in range(1, 6):
                trial.report(final * step, step)
            study.tell(trial, final)
        return study

    yield make
    for storage in storages:  # before the test database is dropped
        storage.engine.dispose()


def _count_reads(study: optuna.Study, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the storage's reads of all trials (what the median pruner asks for)."""
    reads: list[int] = []
    storage = storage_of(study)
    real: Callable[..., Any] = storage.get_all_trials

    def counting(*args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(storage, "get_all_trials", counting)
    return reads


@pytest.mark.parametrize("refreshed", [False, True], ids=["per-trial", "refreshed"])
@pytest.mark.parametrize("value", [0.5, 5.0, 50.0])
def test_view_decides_as_should_prune(
    make_study: MakeStudy, storage_url: str, value: float, refreshed: bool
) -> None:
    study = make_study(storage_url, optuna.pruners.MedianPruner(n_startup_trials=2))
    running = study.ask()
    running.report(value, 1)
    expected = running.should_prune()  # before the view's pruner is installed
    view = PruningView(study)
    if refreshed:  # the batched path; sequential trials use the sampler's snapshot
        view.refresh()
    assert isinstance(study.pruner, SnapshotPruner)
    assert view(running) is expected


@pytest.mark.parametrize("value", [0.5, 50.0])
def test_other_pruners_are_asked_as_usual(
    make_study: MakeStudy, tmp_path: Path, value: float
) -> None:
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=5)
    study = make_study(f"sqlite:///{tmp_path / 'p.db'}", pruner)
    running = study.ask()
    running.report(value, 1)
    expected = running.should_prune()
    assert PruningView(study)(running) is expected
    assert study.pruner is pruner  # asked as it is


def test_checkpoints_read_the_trials_at_most_once(
    make_study: MakeStudy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Trial.should_prune` made the median pruner read every trial at each checkpoint."""
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=3)
    study = make_study(f"sqlite:///{tmp_path / 'p.db'}", pruner)
    running = study.ask()
    reads = _count_reads(study, monkeypatch)
    checkpoints = Checkpoints(running, 1, 10, PruningView(study), Reports.of(study))
    # 50·step is above the median (10·step) from the start; the warmup waits for step 3.
    epoch = 1
    while not checkpoints(epoch, {"val_loss": 50.0 * epoch}):
        epoch += 1
    assert checkpoints.pruned_at == epoch == 3
    assert len(reads) <= 1
    checkpoints.reports.flush()  # as the round does before telling the trial
    stored = storage_of(study).get_trial(trial_id(running)).intermediate_values
    assert stored == {1: 50.0, 2: 100.0, 3: 150.0}  # every checkpoint still reported


def test_a_sequential_trial_reads_the_trials_once_however_many_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ask reads the study once; pruning at every checkpoint adds no read."""
    sweep = SweepConfig(
        study="p",
        base=TrialConfig(epochs=20),
        sampler=SamplerKind.TPE,
        pruner=PrunerKind.MEDIAN,
        report_every=2,  # 9 checkpoints a trial
    )
    quiet_optuna()
    study = create_or_load(sweep, open_storage(f"sqlite:///{tmp_path / 'p.db'}"))
    cpu = torch.device("cpu")
    rounds = RoundOptimizer(study, sweep, load_task(sweep.base), cpu, "cpu", Unrecorded())
    reads = _count_reads(study, monkeypatch)
    rounds.optimize(8)
    trials = study.get_trials(deepcopy=False)
    assert sum(len(t.intermediate_values) for t in trials) > 2 * len(trials)
    assert len(reads) <= 8 + 1  # the last read is get_trials just above

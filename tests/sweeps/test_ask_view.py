"""An ask round served from memory samples exactly what Optuna would, with O(K) reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from sweeps.config import SweepConfig
from sweeps.lifecycle import RoundOptimizer
from sweeps.pruning import PruningView
from sweeps.sampling import RoundSampler, suggest
from sweeps.storage import open_storage
from sweeps.study import create_or_load
from tests.sweeps.study_helpers import Unrecorded
from trainer import load_task

K = 16
CFG = SweepConfig(study="view", trials=K, batch=K)  # TPE (constant liar), all six penalties


def _study_with_history(path: Path) -> optuna.Study:
    """Past TPE's startup trials, plus what other workers leave: an enqueued retry and a
    trial running elsewhere (constant liar counts it)."""
    study = create_or_load(CFG, open_storage(f"sqlite:///{path}"))
    # Optuna's TPE asked per trial, as for rounds the round sampler does not plan (it plans
    # --batch rounds of TPE: tests/sweeps/test_sampling.py): what the view must reproduce.
    assert isinstance(study.sampler, RoundSampler)
    study.sampler = study.sampler.inner
    for i in range(14):
        trial = study.ask()
        cfg = suggest(trial, CFG)
        study.tell(trial, (cfg.lambda_ - 0.5) ** 2 + i / 100)
    suggest(study.ask(), CFG)  # left RUNNING, as by another worker
    study.enqueue_trial({"penalty": "l1", "lambda": 2.0})  # a retry waiting to be asked
    return study


def _params(slots: list[Any]) -> list[dict[str, Any]]:
    return [slot.trial.params for slot in slots]


@pytest.mark.slow
def test_ask_round_samples_what_optuna_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = load_task(CFG.base)

    def optimizer(study: optuna.Study) -> RoundOptimizer:
        return RoundOptimizer(study, CFG, task, torch.device("cpu"), "cpu", Unrecorded())

    viewed = _study_with_history(tmp_path / "viewed.db")
    reads: list[object] = []
    storage_type = type(viewed._storage)
    real = storage_type.get_all_trials

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        reads.append(kwargs.get("states"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(storage_type, "get_all_trials", counted)
    ours = _params(optimizer(viewed)._ask_round(K, PruningView(viewed))[0])
    ours_reads = len(reads)

    plain = _study_with_history(tmp_path / "plain.db")
    reads.clear()
    theirs = []
    for _ in range(K):
        trial = plain.ask()
        suggest(trial, CFG)
        theirs.append(trial.params)
    plain_reads = len(reads)

    assert ours == theirs
    assert ours[0] == {"penalty": "l1", "lambda": 2.0}  # the enqueued retry came first
    assert len({tuple(sorted(p.items())) for p in ours}) > K // 2  # the liar spreads them
    assert ours_reads == 1 < 2 * K < plain_reads  # the round's one read of the study
    assert "_get_trials" not in vars(viewed)  # restored
    assert "get_all_trials" not in vars(viewed._storage)

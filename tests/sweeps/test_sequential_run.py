"""`run_study` in this process, sequentially: what it does around each trial."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

import sweeps.objective
from sweeps.config import SweepConfig
from sweeps.progress import Progress
from sweeps.runner import RunOutcome, run_study
from sweeps.storage import resolve_stores
from trainer import TrialConfig

CFG = SweepConfig(study="s", base=TrialConfig(epochs=2), trials=3)


def _run(home: Path, *, quiet: bool = True) -> RunOutcome:
    return run_study(CFG, resolve_stores(str(home), None, None), track=False, quiet=quiet)


def test_trials_train_with_the_heap_frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gc.unfreeze()
    frozen_while_training: list[int] = []
    real = sweeps.objective.train

    def spy(*args: Any, **kwargs: Any) -> Any:
        frozen_while_training.append(gc.get_freeze_count())
        return real(*args, **kwargs)

    monkeypatch.setattr(sweeps.objective, "train", spy)
    assert _run(tmp_path).counts == {"COMPLETE": 3}
    assert len(frozen_while_training) == 3 and min(frozen_while_training) > 0
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("quiet", [True, False])
def test_progress_is_fed_only_when_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet: bool
) -> None:
    """Quiet runs skip Optuna's callbacks, which re-read every finished trial."""
    shown: list[int] = []
    monkeypatch.setattr(Progress, "__call__", lambda self, _s, t: shown.append(t.number))
    _run(tmp_path, quiet=quiet)
    assert shown == ([] if quiet else [0, 1, 2])

"""The heap is frozen by the commands that run studies, never by the library.

`frozen_heap`: the collector skips what was alive before the block, and only during it.
`sweeps run` / `sweeps worker` import torch, Optuna and MLflow first and train inside the
frozen heap, with rarer young collections and Optuna and MLflow quieted; `run_study` itself
leaves all of that alone.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

import sweeps.training
from sweeps.cli.heap import STUDY_THRESHOLDS, frozen_heap
from sweeps.config import SweepConfig
from sweeps.runner import run_study
from sweeps.storage import resolve_stores
from tests.sweeps.cli_helpers import invoke
from trainer import TrialConfig


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_frozen_inside_and_unfrozen_after_even_on_error() -> None:
    with pytest.raises(RuntimeError), frozen_heap():
        assert gc.get_freeze_count() > 0
        raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0


def test_a_callers_freeze_is_left_alone() -> None:
    gc.freeze()
    with frozen_heap():
        pass
    assert gc.get_freeze_count() > 0


class _Seen:
    """What the process looked like each time a trial trained."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
        self.frozen: list[int] = []
        self.freezes: list[list[str]] = []  # each trial's: the freezes before it
        self.mlflow_loaded: list[bool] = []
        self.optuna_verbosity: list[int] = []
        self.thresholds: list[tuple[int, int, int]] = []
        real = sweeps.training.train
        freezes: list[str] = []
        real_freeze = gc.freeze

        def freeze() -> None:
            freezes.append("stores open" if (home / "sweeps.db").exists() else "before")
            real_freeze()

        monkeypatch.setattr(gc, "freeze", freeze)

        def spy(*args: Any, **kwargs: Any) -> Any:
            self.freezes.append(list(freezes))
            self.frozen.append(gc.get_freeze_count())
            self.mlflow_loaded.append("mlflow" in sys.modules)
            self.optuna_verbosity.append(optuna.logging.get_verbosity())
            self.thresholds.append(gc.get_threshold())
            return real(*args, **kwargs)

        monkeypatch.setattr(sweeps.training, "train", spy)


def test_the_run_command_trains_with_the_heap_frozen_after_mlflow_is_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _Seen(monkeypatch, tmp_path / "h")
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    before = gc.get_threshold()
    assert before != STUDY_THRESHOLDS
    home = str(tmp_path / "h")
    args = ["run", "--home", home, "--study", "s", "--trials", "2", "--epochs", "2", "--quiet"]
    assert invoke(*args).exit_code == 0
    assert len(seen.frozen) == 2 and min(seen.frozen) > 0
    # Frozen after the imports, and again once the stores were open, before any trial.
    assert seen.freezes == [["before", "stores open"]] * 2
    assert all(seen.mlflow_loaded)  # imported before the freeze, so frozen with the rest
    assert set(seen.optuna_verbosity) == {optuna.logging.ERROR}
    assert os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "true"  # keeps --json clean
    assert gc.get_freeze_count() == 0
    # Young collections rarer while the study runs; the process's own thresholds after.
    assert seen.thresholds == [STUDY_THRESHOLDS] * 2
    assert gc.get_threshold() == before


def test_the_library_leaves_the_heap_and_optunas_logging_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _Seen(monkeypatch, tmp_path)
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        cfg = SweepConfig(study="s", base=TrialConfig(epochs=2), trials=2)
        outcome = run_study(cfg, resolve_stores(str(tmp_path), None, None), track=False, quiet=True)
    finally:
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    assert outcome.counts == {"COMPLETE": 2}
    assert seen.frozen == [0, 0] and seen.freezes == [[], []]
    assert seen.thresholds == [gc.get_threshold()] * 2
    assert set(seen.optuna_verbosity) == {optuna.logging.INFO}

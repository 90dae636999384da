"""`run_study` in this process, sequentially: what it does around each trial."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import FrozenTrial

from sweeps.config import SweepConfig
from sweeps.progress import Progress
from sweeps.runner import RunOutcome, run_study
from sweeps.storage import resolve_stores
from trainer import TrialConfig

CFG = SweepConfig(study="s", base=TrialConfig(epochs=2), trials=3)


def _run(home: Path, *, quiet: bool = True) -> RunOutcome:
    return run_study(CFG, resolve_stores(str(home), None, None), track=False, quiet=quiet)


@pytest.mark.parametrize("quiet", [True, False])
def test_progress_gets_each_told_trial_once_and_prints_unless_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], quiet: bool
) -> None:
    fed: list[int] = []
    update = Progress.update

    def spy(self: Progress, trial: FrozenTrial) -> None:
        fed.append(trial.number)
        update(self, trial)

    monkeypatch.setattr(Progress, "update", spy)
    _run(tmp_path, quiet=quiet)
    assert fed == [0, 1, 2]
    printed = [line for line in capsys.readouterr().err.splitlines() if "trial #" in line]
    assert len(printed) == (0 if quiet else 3)

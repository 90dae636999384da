"""A launched worker's share: a worker started again under the same `--share-id` (a
requeued Slurm element, a restarted Ray task) runs only the rest of it."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeps._optuna import FORCE_PUBLIC_ENV, storage_of
from sweeps.attr_keys import REUSED_ATTR, SHARE_ATTR
from sweeps.config import SweepConfig
from sweeps.shares import left_in_share, split
from sweeps.telling import INTERRUPTED, Provenance, user_attrs
from tests.sweeps.cli_helpers import invoke
from tests.sweeps.study_helpers import load, sweep_study
from trainer import Penalty

CFG = SweepConfig(study="shared", penalties=(Penalty.L2,))


def test_split_is_exact() -> None:
    assert split(17, 2) == [9, 8]
    assert split(3, 4) == [1, 1, 1, 0]
    assert sum(split(1001, 7)) == 1001


def _told(study: optuna.Study, share: str | None, state: TrialState, reused: bool) -> None:
    trial = study.ask()
    trial.suggest_float("lambda", 1e-3, 1.0, log=True)
    if share is not None:
        trial.set_user_attr(SHARE_ATTR, share)
    if reused:
        trial.set_user_attr(REUSED_ATTR, 0)
    study.tell(trial, 1.0 if state is TrialState.COMPLETE else None, state=state)


@pytest.mark.parametrize("public", [False, True], ids=["tables", "public-api"])
def test_left_in_share_counts_what_was_told_under_it(
    storage_url: str, public: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Told trials of the share count whatever their state; those of another share, a
    running one and (up to the share) repeats that took an earlier result do not."""
    if public:
        monkeypatch.setenv(FORCE_PUBLIC_ENV, "1")
    with sweep_study(storage_url, CFG) as study:
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            _told(study, "L.0", state, reused=False)
        _told(study, "L.0", TrialState.COMPLETE, reused=True)
        _told(study, "L.1", TrialState.COMPLETE, reused=False)
        _told(study, "L.10", TrialState.COMPLETE, reused=False)
        _told(study, None, TrialState.COMPLETE, reused=False)
        study.ask()  # running: not told
        storage = storage_of(study)
        assert storage is not None

        def left(share: str, trials: int, free: bool = True) -> int:
            return left_in_share(study, storage, share, trials, reuses_free=free)

        assert left("L.0", 5) == 2  # 3 told, the repeat free
        assert left("L.0", 5, free=False) == 1  # a stratified study counts the repeat
        assert left("L.0", 2) == 0
        assert left("L.1", 3) == 2
        assert left("other", 3) == 3


def test_a_worker_started_again_runs_the_rest_of_its_share(tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    study = ["--study", "again", "--home", home]
    created = invoke("run", *study, "--epochs", "2", "--penalties", "l2", "--create-only")
    assert created.exit_code == 0, created.stderr
    worker = ["worker", *study, "--no-track", "--quiet", "--share-id", "L.0"]
    # Started, then restarted twice with its whole share; each start samples its own λ (a
    # repeat of a finished configuration would take its result and not count).
    for start, trials in enumerate(("2", "3", "3")):
        done = invoke(*worker, "--trials", trials, "--worker-index", str(start))
        assert done.exit_code == 0, done.stderr
    trials = load("again", f"sqlite:///{tmp_path / 'h' / 'sweeps.db'}").trials
    assert [t.user_attrs.get(SHARE_ATTR) for t in trials] == ["L.0"] * 3
    assert not any(REUSED_ATTR in t.user_attrs for t in trials)


def test_a_trial_cut_short_by_a_stop_does_not_count_toward_its_share() -> None:
    """SIGTERM (scancel, a preemption) interrupts a worker as Ctrl-C does: its trial is
    FAIL "interrupted", and the worker started again runs another in its place."""
    from tracking.records import TrialRecord
    from tracking.records import TrialState as State

    def rec(error: str | None) -> TrialRecord:
        return TrialRecord("s", 0, State.FAIL, {}, {}, None, 0.0, "cpu", 0, 0, error=error)

    share = Provenance(share="L.0")
    assert user_attrs(rec("ValueError: boom"), share)[SHARE_ATTR] == "L.0"
    assert SHARE_ATTR not in user_attrs(rec(INTERRUPTED), share)
    assert SHARE_ATTR not in user_attrs(rec(None), Provenance())

"""Asking a round of K trials without re-reading the study for every one of them.

TPE's constant liar (Optuna's default) counts RUNNING trials as bad observations, so it
reads every unfinished trial from the storage, uncached, each time it samples: asking K
trials in a row loads O(K²) trials. `AskView` serves the study's trial reads for the round
from memory instead: the whole study read once when the round starts; each trial of the
round read back once after its parameters are set (with the sampler's system attributes,
which TPE reads for running trials), when the next ask first reads the study; the trial
being asked as Optuna's `Trial` keeps it. In one process this is exactly what the storage
would return, so the sampled parameters are the same (tests/sweeps/test_ask_view.py);
other workers' changes during the round are seen from the next round on.

It works by shadowing `Study._get_trials`, through which Optuna's samplers and search-space
helpers read trials, and the storage's `get_all_trials` for this study, which `Study.ask`
calls itself to look for WAITING (enqueued or retried) trials; Optuna has no public hook
for either. A WAITING trial another worker pops first is refused by the storage's state
transition, so `ask` moves on to the next one or a new trial, as it does without the view.
Where those names are gone (or SWEEPS_OPTUNA_PUBLIC=1), the view shadows nothing: each ask
reads the study as Optuna does, and the view only keeps what the round started from.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Container, Iterator
from contextlib import contextmanager

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeps._optuna import missing_trial_attributes, public_forced, warn_once

WHAT = "asking a round's trials from memory"
# Optuna's names the view shadows or reads: Study's, then Trial's.
STUDY_NAMES = ("_get_trials", "_storage", "_study_id")
TRIAL_NAMES = ("_trial_id", "_cached_frozen_trial")


def shadowable(study: optuna.Study) -> bool:
    """Whether this Optuna has what the view shadows and reads (see above); a one-time
    warning where not, unless the public path was asked for."""
    if public_forced():
        return False
    missing = [name for name in STUDY_NAMES if not hasattr(study, name)]
    missing += missing_trial_attributes(TRIAL_NAMES)
    if missing:
        warn_once(WHAT, f"this Optuna has no {', '.join(missing)}")
    return not missing


class AskView:
    """The trials of `study` during one ask round (see above)."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study
        self._shadow = shadowable(study)
        self._current: optuna.Trial | None = None
        self._unread: list[optuna.Trial] = []  # asked, not yet read back
        self._real_get_all_trials: Callable[..., list[FrozenTrial]] | None = None
        if self._shadow:
            self._real_get_all_trials = study._storage.get_all_trials
            trials = self._real_get_all_trials(study._study_id, deepcopy=False)
        else:
            trials = study.get_trials(deepcopy=False)
        self._trials: dict[int, FrozenTrial] = {t.number: t for t in trials}

    def asking(self, trial: optuna.Trial) -> None:
        """`trial` was just created (or popped from WAITING): it is sampled now."""
        self._current = trial

    def asked(self, trial: optuna.Trial) -> None:
        """`trial` has all its parameters: it is read back as the storage now has it when
        the study is next read (never, after a round's last ask)."""
        if self._shadow:
            self._unread.append(trial)
        self._current = None

    def get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        """`Study._get_trials`, from memory."""
        for asked in self._unread:
            self._trials[asked.number] = self._study._storage.get_trial(asked._trial_id)
        self._unread.clear()
        trials = dict(self._trials)
        if self._current is not None:
            trials[self._current.number] = self._current._cached_frozen_trial
        found = [t for _, t in sorted(trials.items()) if states is None or t.state in states]
        return copy.deepcopy(found) if deepcopy else found

    def completed(self) -> list[FrozenTrial]:
        """The study's COMPLETE trials as the round's asks saw them."""
        return self.finished((TrialState.COMPLETE,))

    def finished(
        self, states: Container[TrialState] = (TrialState.COMPLETE, TrialState.PRUNED)
    ) -> list[FrozenTrial]:
        """The study's trials in `states` as the round started (before its first ask)."""
        return [t for _, t in sorted(self._trials.items()) if t.state in states]

    def waiting(self) -> bool:
        """Whether the study had WAITING (enqueued or retried) trials as the round started:
        `Study.ask` pops those before it creates a trial."""
        return any(t.state is TrialState.WAITING for t in self._trials.values())

    def _storage_get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        assert self._real_get_all_trials is not None
        if study_id != self._study._study_id:
            return self._real_get_all_trials(study_id, deepcopy=deepcopy, states=states)
        return self.get_trials(deepcopy=deepcopy, states=states)

    @contextmanager
    def serving(self) -> Iterator[AskView]:
        """Within the block the study reads its trials from this view (where it can)."""
        if not self._shadow:
            yield self
            return
        storage = self._study._storage
        with (
            _shadowing(self._study, "_get_trials", self.get_trials),
            _shadowing(storage, "get_all_trials", self._storage_get_all_trials),
        ):
            yield self


@contextmanager
def _shadowing(owner: object, name: str, replacement: object) -> Iterator[None]:
    """`owner.name` is `replacement` within the block; whatever was there before after it
    (another shadow included, e.g. a test's counting wrapper)."""
    own = vars(owner)
    missing = object()
    before = own.get(name, missing)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        if before is missing:
            delattr(owner, name)
        else:
            setattr(owner, name, before)

"""Asking a round of K trials without re-reading the study for every one of them.

TPE's constant liar (Optuna's default) counts RUNNING trials as bad observations, so it
reads every unfinished trial from the storage, uncached, each time it samples. Asking K
trials in a row therefore loads O(K²) trials: ~13 ms per ask at K = 64 on SQLite, and
minutes per round at K = 1024. `AskView` serves the study's trial reads for the round
from memory instead: the whole study read once when the round starts, each trial of the
round read back once after its parameters are set (with the sampler's system attributes,
which TPE reads for running trials), and the trial being asked as Optuna's `Trial` keeps
it. In one process this is exactly what the storage would return, so the sampled
parameters are the same (tests/sweeps/test_ask_view.py); other workers' changes during
the round are seen from the next round on.

It works by shadowing `Study._get_trials`, the one method through which Optuna's study,
samplers and search-space helpers read trials; Optuna has no public hook for this.
"""

from __future__ import annotations

import copy
from collections.abc import Container, Iterator
from contextlib import contextmanager

import optuna
from optuna.trial import FrozenTrial, TrialState


class AskView:
    """The trials of `study` during one ask round (see above)."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study
        self._trials: dict[int, FrozenTrial] = {
            t.number: t for t in study._storage.get_all_trials(study._study_id, deepcopy=False)
        }
        self._current: optuna.Trial | None = None

    def asking(self, trial: optuna.Trial) -> None:
        """`trial` was just created (or popped from WAITING): it is sampled now."""
        self._current = trial

    def asked(self, trial: optuna.Trial) -> None:
        """`trial` has all its parameters: keep it as the storage now has it."""
        self._trials[trial.number] = self._study._storage.get_trial(trial._trial_id)
        self._current = None

    def get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        """`Study._get_trials`, from memory."""
        trials = dict(self._trials)
        if self._current is not None:
            trials[self._current.number] = self._current._cached_frozen_trial
        found = [t for _, t in sorted(trials.items()) if states is None or t.state in states]
        return copy.deepcopy(found) if deepcopy else found

    @contextmanager
    def serving(self) -> Iterator[AskView]:
        """Within the block the study reads its trials from this view."""
        self._study._get_trials = self.get_trials  # type: ignore[method-assign]
        try:
            yield self
        finally:
            del self._study._get_trials

"""A proposal identical to a finished trial takes that trial's result instead of training.

Every seed and setting of a trial is its study's, so a trial whose searched parameters
equal those of a COMPLETE trial of the same data (`sweeps.data_pins`) would train to the
same result: TPE proposes the parameterless `none` penalty again and again. Such a trial is
recorded with the earlier result, a duration of 0 and `reused_from` naming the trial.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.trial import FrozenTrial

from sweeps.attr_keys import DATA_VERSION_ATTR, RECORD_ATTR
from tracking.records import TrialRecord, TrialState, now_ms
from trainer.config import TrialConfig


def config_key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A trial's searched parameters as a key: the rest of its config is the study's."""
    return tuple(sorted(params.items()))


class Reusable:
    """The COMPLETE trials a repeated proposal may take its result from."""

    def __init__(self, study: str, data_version: str | None, device_label: str) -> None:
        self._study = study
        self._data_version = data_version
        self._device_label = device_label
        self._complete: dict[tuple[tuple[str, Any], ...], FrozenTrial] = {}

    def add(self, completed: list[FrozenTrial]) -> None:
        """Completed trials trained on this process's data, and not reused themselves
        (the first of each configuration is kept)."""
        for trial in completed:
            attrs = trial.user_attrs
            if attrs.get(DATA_VERSION_ATTR) != self._data_version:
                continue  # trained on other data (or on data never pinned)
            if attrs.get(RECORD_ATTR, {}).get("reused_from") is None:
                self._complete.setdefault(config_key(trial.params), trial)

    def record(
        self, number: int, params: Mapping[str, Any], cfg: TrialConfig, started_ms: int
    ) -> TrialRecord | None:
        """Trial `number`'s record with the earlier result of its configuration, or None
        when there is none to take."""
        earlier = self._complete.get(config_key(params))
        if earlier is None:
            return None
        kept: dict[str, Any] = earlier.user_attrs.get(RECORD_ATTR) or {}
        if kept.get("state") != TrialState.COMPLETE.value or earlier.value is None:
            return None
        return TrialRecord(
            study=self._study,
            number=number,
            state=TrialState.COMPLETE,
            params=cfg.as_params(),
            final=dict(kept.get("final") or {}),
            value=earlier.value,
            duration_s=0.0,
            device=self._device_label,
            start_time_ms=started_ms,
            end_time_ms=now_ms(),
            reused_from=earlier.number,
        )

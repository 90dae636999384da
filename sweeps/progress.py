"""Progress of a study: a bar on a terminal, one plain line per trial otherwise."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import TextIO

from optuna.trial import FrozenTrial, TrialState

from sweeps.attr_keys import RECORD_ATTR


def describe(trial: FrozenTrial) -> str:
    """`#12 l2 λ=3.16` — the same words as the MLflow run names."""
    penalty = trial.params.get("penalty", "?")
    lam = trial.params.get("lambda")
    return f"#{trial.number} {penalty}" + (f" λ={lam:.3g}" if lam is not None else "")


@dataclass
class Progress:
    """Fed finished trials (as they are told, or by polling workers); prints to `stream`."""

    total: int
    done: int = 0
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    best: float = math.inf
    seen: set[int] = field(default_factory=set)
    quiet: bool = False

    @property
    def is_tty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, trial: FrozenTrial) -> None:
        if trial.number in self.seen or not trial.state.is_finished():
            return
        self.seen.add(trial.number)
        self.done += 1
        if trial.state is TrialState.COMPLETE and trial.value is not None:
            self.best = min(self.best, trial.value)
        if self.quiet:
            return
        if self.is_tty:
            self._bar(trial)
        else:
            self.stream.write(self._line(trial) + "\n")
        self.stream.flush()

    def _line(self, trial: FrozenTrial) -> str:
        state = trial.state.name
        value = f" val_loss={trial.value:.6g}" if trial.value is not None else ""
        reason = trial.user_attrs.get(RECORD_ATTR, {}).get("error") or ""
        why = f" ({reason})" if reason and state != "COMPLETE" else ""
        head = f"[{self.done}/{self.total}] trial {describe(trial)}"
        return f"{head} {state}{value}{why} best={self.best:.6g}"

    def _bar(self, trial: FrozenTrial) -> None:
        width = 30
        filled = min(width, round(width * self.done / max(self.total, 1)))
        bar = "#" * filled + "-" * (width - filled)
        best = f"{self.best:.6g}" if math.isfinite(self.best) else "-"
        self.stream.write(
            f"\r[{bar}] {self.done}/{self.total} best {best}  last {describe(trial)}\033[K"
        )
        if self.done >= self.total:
            self.stream.write("\n")

    def close(self) -> None:
        if self.is_tty and not self.quiet and self.done < self.total:
            self.stream.write("\n")
            self.stream.flush()

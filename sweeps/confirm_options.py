"""`ConfirmOptions`: what `sweeps confirm` confirms and how, validated once.

Apart from `sweeps.confirm_study` so that the command line reads its defaults without importing
the statistics and training code behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sweeps.errors import UsageError

MAX_SEEDS = 1000


@dataclass(frozen=True)
class ConfirmOptions:
    """What to confirm and how (the flags of `sweeps confirm`)."""

    seeds: int = 10
    top: int = 1
    trials: tuple[int, ...] = ()  # exactly these trials, instead of each penalty's best
    fixed_data: bool = False
    batch: int | None = None  # at most this many (candidate, seed) runs per stack
    device: str | None = None  # default: the study's device

    def __post_init__(self) -> None:
        if not 1 <= self.seeds <= MAX_SEEDS:
            raise UsageError(f"--seeds must be in [1, {MAX_SEEDS}], got {self.seeds}")
        if self.top < 1:
            raise UsageError(f"--top must be >= 1, got {self.top}")
        if self.batch is not None and self.batch < 1:
            raise UsageError(f"--batch must be >= 1, got {self.batch}")


__all__ = ["MAX_SEEDS", "ConfirmOptions"]

"""`SweepConfig`: every option of `sweeps run`, from flags and/or a TOML file, validated once."""

from __future__ import annotations

import math
import os
import stat
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from sweeps.errors import UsageError
from tracking.records import History, HistoryPolicy
from trainer.config import MAX_LR, Optimizer, Penalty, TaskOption, TrialConfig, parse_enum
from trainer.errors import ConfigError
from trainer.task_options import option_names


class SamplerKind(StrEnum):
    TPE = "tpe"
    RANDOM = "random"
    GRID = "grid"
    CMAES = "cmaes"
    GP = "gp"


class PrunerKind(StrEnum):
    MEDIAN = "median"
    HYPERBAND = "hyperband"
    NONE = "none"


ALL_PENALTIES = tuple(Penalty)
# Penalties that train exactly like another under an optimizer: `weight_decay` adds λ·w to
# the gradient of the penalized tensors, which is the gradient of l2's λ·½‖w‖² on the same
# tensors, under plain SGD and under Adam's coupled decay (not AdamW's decoupled one).
# The default set searches one of each such pair; naming both in --penalties keeps both.
EQUIVALENT = {
    Optimizer.SGD: {Penalty.WEIGHT_DECAY: Penalty.L2},
    Optimizer.ADAM: {Penalty.WEIGHT_DECAY: Penalty.L2},
}


def default_penalties(optimizer: Optimizer) -> tuple[Penalty, ...]:
    """Every penalty less those identical under `optimizer` to one searched already."""
    same = EQUIVALENT.get(optimizer, {})
    return tuple(p for p in ALL_PENALTIES if p not in same)


def left_out_note(optimizer: Optimizer) -> str | None:
    """What the default set leaves out under `optimizer`, and why, in one line."""
    same = EQUIVALENT.get(optimizer, {})
    if not same:
        return None
    left = ", ".join(f"{p.value} left out: identical to {q.value}" for p, q in same.items())
    return f"{left} under {optimizer.value}; name both with --penalties to keep both"


def default_penalties_text() -> str:
    """The default set in words, for help texts: `all 6, less weight_decay under sgd and
    adam, where it is identical to l2`."""
    left: dict[tuple[Penalty, Penalty], list[str]] = {}
    for optimizer, same in EQUIVALENT.items():
        for penalty, twin in same.items():
            left.setdefault((penalty, twin), []).append(optimizer.value)
    parts = [
        f"less {p.value} under {' and '.join(opts)}, where it is identical to {q.value}"
        for (p, q), opts in left.items()
    ]
    return ", ".join([f"all {len(ALL_PENALTIES)}", *parts])


# Keys a TOML file may hold (dashes or underscores), with the type each must have.
_TRAINING_KEYS = {"task", "epochs", "lr", "batch_size", "optimizer", "penalize", "seed", "device"}
_SWEEP_KEYS = {
    "study",
    "penalties",
    "lambda_min",
    "lambda_max",
    "lr_min",
    "lr_max",
    "trials",
    "timeout",
    "sampler",
    "pruner",
    "workers",
    "batch",
    "devices",
    "repeats",
    "grid_points",
    "report_every",
    "history",
    "per_penalty",
}
TASK_OPTION_KEYS = frozenset(option_names())


# Upper bounds of the counts: far past any real study, short of what overflows or would
# run for ever (a typo such as 10**20 trials is refused, not started).
MAX_COUNTS = {
    "trials": 10**7,
    "workers": 1024,
    "batch": 10**6,
    "repeats": 1000,
    "grid_points": 10**4,
}
# Samplers that can draw λ (and l1_ratio) within a penalty chosen for them (--per-penalty).
STRATIFIED_SAMPLERS = ("tpe", "random")
# Optuna's and the results tables' name columns hold 512; MLflow's experiment names fewer.
MAX_STUDY_NAME = 200
# The MLflow experiment of `sweeps train` runs: a study's experiment takes the study's name,
# so a study of this name would share it (and `check --repair` would take its runs for
# the study's trials).
TRAIN_EXPERIMENT = "sweeps-train"


@dataclass(frozen=True)
class SweepConfig:
    """A validated study definition. `base` holds the training knobs every trial shares."""

    study: str
    base: TrialConfig = field(default_factory=TrialConfig)
    # () → `default_penalties` of the optimizer (the equivalent pairs' one member).
    penalties: tuple[Penalty, ...] = ()
    lambda_min: float = 1e-5
    lambda_max: float = 100.0
    # The learning rate searched too, log-uniform in [lr_min, lr_max]; None: the base lr
    # for every trial (a decay step is lr·λ, so the best λ at one lr can mislead at another).
    lr_min: float | None = None
    lr_max: float | None = None
    trials: int = 20
    timeout: float | None = None
    sampler: SamplerKind = SamplerKind.TPE
    pruner: PrunerKind = PrunerKind.MEDIAN
    workers: int = 1
    batch: int = 1  # trials trained together as one stacked model (sweeps.lifecycle)
    devices: tuple[str, ...] = ()
    repeats: int = 1
    grid_points: int = 8  # λ values per penalty for --sampler grid
    report_every: int | None = None  # epochs between pruning reports; None → epochs // 10
    # Metric rows per trial in MLflow (docs/tracking.md, "Metric history"): checkpoints, or
    # final values in rounds large enough that writing them outweighs training; every epoch
    # is in each trial's history.csv all the same, and the best trials get their whole curves.
    history: History = History.AUTO
    # A stratified search: every penalty gets exactly this many of the study's trials, the
    # penalty chosen by count, not sampled (sweeps.sampling); `trials` is it × penalties.
    per_penalty: int | None = None

    def __post_init__(self) -> None:
        if not self.penalties:
            object.__setattr__(self, "penalties", default_penalties(self.base.optimizer))
        if not self.study.strip():
            raise UsageError("--study must be a non-empty name")
        if not self.study.isprintable() or len(self.study) > MAX_STUDY_NAME:
            raise UsageError(
                f"--study must be printable text of at most {MAX_STUDY_NAME} characters"
                f" (no control characters), got {self.study[:40]!r}"
            )
        if self.study == TRAIN_EXPERIMENT:
            raise UsageError(
                f"--study {TRAIN_EXPERIMENT!r} is reserved: `sweeps train` logs its runs to the"
                " MLflow experiment of that name; use another --study name"
            )
        # nan passes every comparison below and inf breaks the samplers' log-uniform draws
        # after the study is saved: refuse both here, before anything is written.
        for flag, value in (
            ("lambda-min", self.lambda_min),
            ("lambda-max", self.lambda_max),
            ("timeout", self.timeout),
        ):
            if value is not None and not math.isfinite(value):
                raise UsageError(f"--{flag} must be a finite number, got {value}")
        if not 0 < self.lambda_min < self.lambda_max:
            raise UsageError(
                f"need 0 < --lambda-min < --lambda-max, got {self.lambda_min} and {self.lambda_max}"
            )
        self._check_lr_range()
        if self.per_penalty is not None:
            self._check_per_penalty(self.per_penalty)
        for name, most in MAX_COUNTS.items():
            if not 1 <= getattr(self, name) <= most:
                raise UsageError(
                    f"--{name.replace('_', '-')} must be in [1, {most}], got {getattr(self, name)}"
                )
        if self.timeout is not None and self.timeout <= 0:
            raise UsageError(f"--timeout must be > 0 seconds, got {self.timeout}")
        if self.report_every is not None and self.report_every <= 0:
            raise UsageError(f"--report-every must be >= 1, got {self.report_every}")

    def _check_lr_range(self) -> None:
        if (self.lr_min is None) != (self.lr_max is None):
            raise UsageError("give both --lr-min and --lr-max (a log-uniform lr range), or neither")
        if self.lr_min is None or self.lr_max is None:
            return
        for flag, value in (("lr-min", self.lr_min), ("lr-max", self.lr_max)):
            if not math.isfinite(value):
                raise UsageError(f"--{flag} must be a finite number, got {value}")
        if not 0 < self.lr_min <= self.lr_max:
            raise UsageError(
                f"need 0 < --lr-min <= --lr-max, got {self.lr_min:g} and {self.lr_max:g}"
            )
        if self.lr_max > MAX_LR:
            raise UsageError(f"--lr-max must be at most {MAX_LR:g}, got {self.lr_max:g}")

    @property
    def searches_lr(self) -> bool:
        """Whether lr is searched (`--lr-min/--lr-max`) instead of fixed (`--lr`)."""
        return self.lr_min is not None

    def _check_per_penalty(self, n: int) -> None:
        if not 1 <= n <= MAX_COUNTS["trials"] // len(self.penalties):
            most = MAX_COUNTS["trials"] // len(self.penalties)
            raise UsageError(f"--per-penalty must be in [1, {most}], got {n}")
        if self.sampler.value not in STRATIFIED_SAMPLERS:
            raise UsageError(
                f"--per-penalty needs --sampler {' or '.join(STRATIFIED_SAMPLERS)}"
                f" (λ drawn within each penalty), got {self.sampler.value}"
            )
        if self.trials != n * len(self.penalties):
            raise UsageError(
                f"--trials {self.trials} conflicts with --per-penalty {n}: that is"
                f" {n} × {len(self.penalties)} penalties = {n * len(self.penalties)} trials;"
                " give one of them"
            )

    @property
    def history_policy(self) -> HistoryPolicy:
        return HistoryPolicy.resolve(self.history, self.checkpoint_every, self.batch)

    @property
    def checkpoint_every(self) -> int:
        """Epochs between intermediate reports: each is a storage write, so about ten."""
        return self.report_every or max(1, self.base.epochs // 10)

    def space_signature(self) -> dict[str, Any]:
        """What makes trials comparable; a resumed study must match it exactly."""
        base = self.base.as_params()
        for key in ("penalty", "lambda", "l1_ratio", "device"):
            base.pop(key)
        # lr's range only where it is searched (and then no fixed lr): a study made without
        # it keeps its stored signature.
        searched = {"lr_min": self.lr_min, "lr_max": self.lr_max} if self.searches_lr else {}
        if self.searches_lr:
            base.pop("lr")
        return {
            "penalties": [p.value for p in self.penalties],
            "lambda_min": self.lambda_min,
            "lambda_max": self.lambda_max,
            **searched,
            "grid_points": self.grid_points if self.sampler is SamplerKind.GRID else None,
            "repeats": self.repeats,
            **base,
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, for the results store and the study's user attributes."""
        return {
            "study": self.study,
            "sampler": self.sampler.value,
            "pruner": self.pruner.value,
            "trials": self.trials,
            "timeout": self.timeout,
            "workers": self.workers,
            "batch": self.batch,
            "devices": list(self.devices),
            "device": self.base.device,
            "report_every": self.checkpoint_every,
            "history": self.history.value,
            "per_penalty": self.per_penalty,
            **self.space_signature(),
        }

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SweepConfig:
        """Build from flag/TOML values (keys with underscores); absent keys take defaults."""
        values = {k.replace("-", "_"): v for k, v in values.items() if v is not None}
        unknown = sorted(set(values) - _TRAINING_KEYS - _SWEEP_KEYS - TASK_OPTION_KEYS)
        if unknown:
            raise UsageError(f"unknown sweep option {unknown[0]!r}")
        for key, value in values.items():
            if key in _TRAINING_KEYS or key in _SWEEP_KEYS:
                _check_type(key, value)
        task_options: tuple[tuple[str, TaskOption], ...] = tuple(
            (k, values[k]) for k in sorted(TASK_OPTION_KEYS) if k in values
        )
        try:
            base = TrialConfig(
                task_options=task_options, **{k: values[k] for k in _TRAINING_KEYS if k in values}
            )
            sweep = {k: values[k] for k in _SWEEP_KEYS if k in values}
            if "penalties" in sweep:
                sweep["penalties"] = parse_penalties(sweep["penalties"])
            if "devices" in sweep:
                sweep["devices"] = parse_list(sweep["devices"], "--devices")
            if "sampler" in sweep:
                sweep["sampler"] = parse_enum(SamplerKind, sweep["sampler"], "sampler")
            if "pruner" in sweep:
                sweep["pruner"] = parse_enum(PrunerKind, sweep["pruner"], "pruner")
            if "history" in sweep:
                sweep["history"] = parse_enum(History, sweep["history"], "history")
            if "study" not in sweep:
                raise UsageError("--study NAME is required")
            if "lr" in values and ("lr_min" in sweep or "lr_max" in sweep):
                raise UsageError("give either --lr (a fixed lr) or --lr-min/--lr-max, not both")
            if "per_penalty" in sweep and "trials" not in sweep:
                n_penalties = len(sweep.get("penalties") or default_penalties(base.optimizer))
                sweep["trials"] = sweep["per_penalty"] * n_penalties
            return cls(base=base, **sweep)
        except ConfigError as e:
            raise UsageError(str(e)) from None
        except TypeError as e:  # a TOML value of the wrong type
            raise UsageError(f"invalid sweep option: {e}") from None


def _field_types() -> dict[str, Any]:
    hints = {**typing.get_type_hints(TrialConfig), **typing.get_type_hints(SweepConfig)}
    return {key: hints[key] for key in _TRAINING_KEYS | _SWEEP_KEYS}


def _check_type(key: str, value: Any) -> None:
    """A TOML value must have its option's type: TOML says 2.5 or true where a count is
    meant, and Python would take either as a number (a bool is an int to Python)."""
    hint = _FIELD_TYPES[key]
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kind = next(k for k in typing.get_args(hint) if k is not type(None)) if optional else hint
    origin = typing.get_origin(kind)
    if origin is tuple:  # a list, or a comma-separated string, of names
        ok = isinstance(value, str | list | tuple)
    elif kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:  # str and the enums, given by name
        ok = isinstance(value, str)
    if not ok:
        want = "a list of names" if origin is tuple else getattr(kind, "__name__", str(kind))
        shown = f"{value!r} ({type(value).__name__})"
        raise UsageError(f"option {key.replace('_', '-')} must be {want}, got {shown}")


_FIELD_TYPES = _field_types()


def parse_list(value: str | list[str] | tuple[str, ...], what: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    cleaned = tuple(str(i).strip() for i in items if str(i).strip())
    if not cleaned:
        raise UsageError(f"{what} must not be empty")
    return cleaned


def parse_penalties(value: str | list[str] | tuple[str, ...]) -> tuple[Penalty, ...]:
    names = parse_list(value, "--penalties")
    penalties = tuple(parse_enum(Penalty, n, "penalty") for n in names)
    return tuple(dict.fromkeys(penalties))  # drop repeats, keep order


MAX_CONFIG_BYTES = 1 << 20  # a sweep file is a few lines; more is not one


def _read_config(path: str | Path) -> bytes:
    """The file's bytes: a regular file, or a pipe (`--config <(...)`), of at most
    MAX_CONFIG_BYTES; a device (/dev/zero), a socket or a larger file is refused after
    reading no more than that."""
    with open(path, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise UsageError(f"config file {str(path)!r} is not a regular file")
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise UsageError(
            f"config file {str(path)!r} is larger than {MAX_CONFIG_BYTES // 1024} KiB;"
            " a sweep file holds a few options"
        )
    return data


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a sweep file; its keys use the flag names (`lambda-min` or `lambda_min`), once
    each, at top level or in a `[sweep]` table."""
    try:
        data = tomllib.loads(_read_config(path).decode("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"config file {str(path)!r} does not exist") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"config file {str(path)!r} is not UTF-8 text: {e.reason}") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"cannot read config file {str(path)!r}: {e}") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise UsageError(
            f"config file {str(path)!r} nests arrays or tables too deeply;"
            " a sweep file holds a few flat options"
        ) from None
    table = data.pop("sweep", {})
    if not isinstance(table, dict):
        raise UsageError(f"config file {str(path)!r}: `sweep` must be a table")
    flat: dict[str, Any] = {}
    for key, value in [*table.items(), *data.items()]:
        name = key.replace("_", "-")
        if name in flat:
            raise UsageError(f"config file {str(path)!r} gives {name} twice")
        if key.replace("-", "_") in _FIELD_TYPES:
            _check_type(key.replace("-", "_"), value)
        flat[name] = value
    return flat

"""The whole configuration of one training run, as one frozen, validated dataclass."""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from trainer.errors import ConfigError

TaskOption = str | int | float | bool
E = TypeVar("E", bound=StrEnum)


@dataclass(frozen=True)
class OptionSpec:
    """One task option: its type, default and bounds (checked by tasks.base.resolve_options).

    Declared in trainer.task_options, which imports no torch, for the tasks and the CLI.
    """

    kind: type
    default: TaskOption
    minimum: float | None = None
    help: str = ""
    choices: tuple[str, ...] | None = None
    maximum: float | None = None  # exclusive
    path: bool = False  # a file: the CLI makes it absolute, so a study's workers find it


# Bounds that keep a value inside what the trainer can compute with, refused up front
# (numpy's seeds are 32-bit; a float32 step overflows past ~3e38, absurdly past 1e6).
MAX_SEED = 2**32 - 1
MAX_LR = 1e6
MAX_EPOCHS = 10**7
DEFAULT_L1_RATIO = 0.5  # elastic_net's mix α when none is given: half L1, half L2


class Penalty(StrEnum):
    """The closed set of regularizers a trial can use."""

    NONE = "none"
    L1 = "l1"  # λ‖w‖₁
    L2 = "l2"  # λ·½‖w‖², d2l's l2_penalty
    L2_UNSQUARED = "l2_unsquared"  # λ·Σ‖W‖₂ per tensor, what torch.norm(W, p=2) gives
    ELASTIC_NET = "elastic_net"  # λ(α‖w‖₁ + (1−α)·½‖w‖²)
    WEIGHT_DECAY = "weight_decay"  # the optimizer's weight_decay (decoupled under AdamW)


class Optimizer(StrEnum):
    SGD = "sgd"
    ADAM = "adam"
    ADAMW = "adamw"


def parse_enum(enum: type[E], value: str | E, what: str) -> E:
    """Turn user text into an enum member, or a ConfigError listing the choices."""
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(m.value for m in enum)
        raise ConfigError(f"unknown {what} {value!r}; choose one of: {choices}") from None


@dataclass(frozen=True)
class TrialConfig:
    """Every knob of one training run. Validated on construction; immutable afterwards.

    `seed` drives initialization and shuffling; `data_seed` (default: `seed`) drives the
    data, so repeats of a trial can vary the model while keeping the dataset. `split_seed`
    draws the train/validation/test permutation of the tasks that split one table (bundled,
    csv); None keeps their fixed split, which every trial of a study uses.
    """

    task: str = "d2l-synthetic"
    penalty: Penalty = Penalty.NONE
    lambda_: float = 0.0
    l1_ratio: float | None = None  # only meaningful for elastic_net
    penalize: str = "weights"  # "weights" (dim >= 2), "all", or comma-separated name globs
    optimizer: Optimizer = Optimizer.SGD
    lr: float = 0.003  # d2l's learning rate for the weight-decay experiment
    batch_size: int = 5  # d2l's minibatch; 0 means full batch
    epochs: int = 100
    seed: int = 0
    data_seed: int | None = None
    device: str = "auto"
    split_seed: int | None = None  # None: the task's fixed split (see trainer.tasks.tabular)
    task_options: tuple[tuple[str, TaskOption], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "penalty", parse_enum(Penalty, self.penalty, "penalty"))
        object.__setattr__(self, "optimizer", parse_enum(Optimizer, self.optimizer, "optimizer"))
        object.__setattr__(self, "task_options", tuple(sorted(self.task_options)))
        self._validate()

    def _validate(self) -> None:
        if not _finite(self.lambda_) or self.lambda_ < 0:
            raise ConfigError(f"lambda must be a finite number >= 0, got {self.lambda_}")
        if self.penalty is Penalty.ELASTIC_NET:
            if self.l1_ratio is None:
                object.__setattr__(self, "l1_ratio", DEFAULT_L1_RATIO)
            elif not 0.0 <= self.l1_ratio <= 1.0:
                raise ConfigError(f"l1_ratio must be in [0, 1], got {self.l1_ratio}")
        elif self.l1_ratio is not None:
            raise ConfigError("l1_ratio applies only to the elastic_net penalty")
        if not _finite(self.lr) or self.lr <= 0 or self.lr > MAX_LR:
            raise ConfigError(f"lr must be a finite number in (0, {MAX_LR:g}], got {self.lr}")
        for name in ("seed", "data_seed", "split_seed"):
            seed = getattr(self, name)
            if seed is not None and not 0 <= seed <= MAX_SEED:
                raise ConfigError(f"{name} must be in [0, {MAX_SEED}], got {seed}")
        if self.batch_size < 0:
            raise ConfigError(
                f"batch size must be >= 1 (or 0 for full batch), got {self.batch_size}"
            )
        if not 1 <= self.epochs <= MAX_EPOCHS:
            raise ConfigError(f"epochs must be in [1, {MAX_EPOCHS}], got {self.epochs}")
        if not self.penalize.strip() or any(not g.strip() for g in self.penalize.split(",")):
            raise ConfigError(
                f"--penalize needs 'weights', 'all' or name globs, got {self.penalize!r}"
            )

    @property
    def effective_data_seed(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed

    @property
    def data_key(self) -> tuple[int, int | None]:
        """What the task's data depends on: configs with one key share one dataset."""
        return self.effective_data_seed, self.split_seed

    @property
    def options(self) -> dict[str, TaskOption]:
        return dict(self.task_options)

    def replace(self, **changes: Any) -> TrialConfig:
        return dataclasses.replace(self, **changes)

    def as_params(self) -> dict[str, Any]:
        """The config under the names users read everywhere (JSON, MLflow params, SQL)."""
        params: dict[str, Any] = {
            "task": self.task,
            "penalty": self.penalty.value,
            "lambda": self.lambda_,
            "l1_ratio": self.l1_ratio,
            "penalize": self.penalize,
            "optimizer": self.optimizer.value,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "seed": self.seed,
            "data_seed": self.effective_data_seed,
            "device": self.device,
        }
        if self.split_seed is not None:  # only where set: a trial's params stay as they are
            params["split_seed"] = self.split_seed
        params.update({f"task.{k}": v for k, v in self.task_options})
        return params

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrialConfig:
        """Inverse of `as_params` (used to rebuild a config from a stored record)."""
        options = tuple((k[5:], v) for k, v in params.items() if k.startswith("task."))
        default = functools.partial(field_default, cls)
        return cls(
            task=params["task"],
            penalty=params["penalty"],
            lambda_=float(params["lambda"]),
            l1_ratio=None if params.get("l1_ratio") is None else float(params["l1_ratio"]),
            penalize=params.get("penalize", default("penalize")),
            optimizer=params.get("optimizer", default("optimizer")),
            lr=float(params["lr"]),
            batch_size=int(params["batch_size"]),
            epochs=int(params["epochs"]),
            seed=int(params["seed"]),
            data_seed=params.get("data_seed"),
            device=params.get("device", default("device")),
            split_seed=None if params.get("split_seed") is None else int(params["split_seed"]),
            task_options=options,
        )


def field_default(cls: type[Any], name: str) -> Any:
    """The default of dataclass `cls`'s field `name` (a factory's product): the one place a
    default is written, which the CLI's flags and help texts read."""
    found = {f.name: f for f in dataclasses.fields(cls)}[name]
    if found.default is not dataclasses.MISSING:
        return found.default
    if found.default_factory is not dataclasses.MISSING:
        return found.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def _finite(x: float) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)

"""Option groups shared by `sweeps train`, `sweeps run` and `sweeps worker`."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar

import click

from trainer.config import Optimizer, OptionSpec, Penalty, TaskOption, TrialConfig, field_default
from trainer.task_options import TASK_OPTIONS, option_names

F = TypeVar("F", bound=Callable[..., Any])

PENALTIES = [p.value for p in Penalty]
OPTIMIZERS = [o.value for o in Optimizer]


def _task_option_flag(name: str, spec: OptionSpec, tasks: list[str]) -> Callable[[F], F]:
    """The flag of one task option, help and type taken from its spec; unset, it is None
    and stays out of the task options, so a task's own default applies."""
    dash = name.replace("_", "-")
    owners = "" if len(tasks) == len(TASK_OPTIONS) else f"{', '.join(tasks)}: "
    shown = dash if spec.kind is bool else spec.default
    default = f" [{shown}]" if spec.default not in ("", False) else ""
    help_text = f"{owners}{spec.help[:1].upper() if not owners else spec.help[:1]}"
    help_text += f"{spec.help[1:]}{default}."
    if spec.kind is bool:
        flag = f"--{dash}/--no-{dash}" if spec.default else f"--{dash}"
        return click.option(flag, name, is_flag=True, default=None, help=help_text)
    kind: Any = spec.kind
    if spec.path:  # absolute: a study stores it, and its workers may run elsewhere
        kind = click.Path(dir_okay=False, resolve_path=True)
    elif spec.choices is not None:
        kind = click.Choice(spec.choices)
    return click.option(f"--{dash}", name, type=kind, default=None, help=help_text)


def _task_option_flags() -> list[Callable[[F], F]]:
    """Every built-in task's options as flags: each task-specific one, then those all tasks
    share. A task refuses options it does not have, so every flag can sit on every command."""
    tasks: dict[str, list[str]] = {}
    for task, specs in TASK_OPTIONS.items():
        for name in specs:
            tasks.setdefault(name, []).append(task)
    names = sorted(option_names(), key=lambda n: len(tasks[n]) == len(TASK_OPTIONS))
    specs = {n: s for options in reversed(TASK_OPTIONS.values()) for n, s in options.items()}
    return [_task_option_flag(name, specs[name], tasks[name]) for name in names]


TASK_OPTION_FLAGS = _task_option_flags()


def task_option_flags(f: F) -> F:
    for option in reversed(TASK_OPTION_FLAGS):
        f = option(f)
    return f


def collect_task_options(kwargs: dict[str, Any]) -> tuple[tuple[str, TaskOption], ...]:
    """Pop the task-option flags out of a command's kwargs; keep only those given."""
    given = {name: kwargs.pop(name) for name in option_names()}
    return tuple((k, v) for k, v in given.items() if v is not None)


def default_value(cls: type[Any], name: str) -> Any:
    """The default of dataclass field `cls.name` as a flag takes it (an enum by its value)."""
    value = field_default(cls, name)
    return value.value if isinstance(value, Enum) else value


def shown(value: Any) -> str:
    """A default as a help text shows it: `1e-05`, `0.003`, `sgd`."""
    if isinstance(value, Enum):
        return str(value.value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def default_text(cls: type[Any], name: str) -> str:
    """`[1e-05]`: the default of dataclass field `cls.name`, for a help text that shows the
    default of a flag left unset (None: a TOML file's value or the stored study's holds)."""
    return f"[{shown(field_default(cls, name))}]"


def field_flag(
    cls: type[Any], name: str, *decls: str, defaults: bool, help: str | None = None, **kw: Any
) -> Callable[[F], F]:
    """A flag whose default is dataclass field `cls.name`'s: its value with click's shown
    default (`defaults`), or unset with the default named at the end of its help."""
    if defaults:
        value = default_value(cls, name)
        return click.option(*decls, default=value, show_default=True, help=help, **kw)
    text = default_text(cls, name)
    if help:  # `Learning rate [0.003].`
        text = f"{help[:-1]} {text}." if help.endswith(".") else f"{help} {text}"
    return click.option(*decls, default=None, help=text, **kw)


def training_flags(*, defaults: bool = True) -> Callable[[F], F]:
    """Trainer options that are not searched: task, optimizer, lr, batch, epochs, scope;
    their defaults are TrialConfig's.

    `defaults=False` (for `sweeps run`) leaves unset flags as None, so a TOML file's values
    are overridden only by flags actually given.
    """

    def flag(name: str, *decls: str, **kw: Any) -> Callable[[F], F]:
        return field_flag(TrialConfig, name, *decls, defaults=defaults, **kw)

    options = (
        flag(
            "task", "--task", help="d2l-synthetic, diabetes, digits, csv or python:MODULE:FUNCTION."
        ),
        flag("epochs", "--epochs", type=int),
        flag("lr", "--lr", type=float, help="Learning rate."),
        flag("batch_size", "--batch-size", type=int, help="0 means full batch."),
        flag("optimizer", "--optimizer", type=click.Choice(OPTIMIZERS)),
        flag(
            "penalize",
            "--penalize",
            help="Tensors the penalty covers: weights (dim>=2), all, or name globs.",
        ),
        flag("seed", "--seed", type=int),
        flag("device", "--device", help="auto|cpu|cuda|cuda:N|mps"),
    )

    def decorate(f: F) -> F:
        f = task_option_flags(f)  # listed after the training flags in --help
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


THREADS_ENV = "SWEEPS_THREADS"


def threads_option(f: F) -> F:
    """--threads: torch's CPU threads per process (see trainer.devices.set_cpu_threads)."""
    return click.option(
        "--threads",
        type=int,
        envvar=THREADS_ENV,
        default=None,
        help=f"Torch CPU threads per process [1; env {THREADS_ENV}].",
    )(f)


def accept_data_change_option(f: F) -> F:
    """--accept-data-change on the commands that run a study's trials (sweeps.data_pins)."""
    return click.option(
        "--accept-data-change",
        is_flag=True,
        help="Go on although a data file the study pinned (a csv table, a python: task's"
        " module) changed: the study takes the new files as its next data version and reuses"
        " no result trained on the old ones.",
    )(f)


MAX_THREADS = 4096


def apply_threads(threads: int | None) -> int:
    """Sets this process's torch threads; refuses a count below 1 as bad input (exit 2)."""
    from sweeps.errors import UsageError
    from trainer.devices import set_cpu_threads

    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise UsageError(f"--threads must be in [1, {MAX_THREADS}], got {threads}")
    return set_cpu_threads(threads)

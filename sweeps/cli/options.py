"""Option groups shared by `sweeps train`, `sweeps run` and `sweeps worker`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from trainer.config import Optimizer, Penalty, TaskOption

F = TypeVar("F", bound=Callable[..., Any])

PENALTIES = [p.value for p in Penalty]
OPTIMIZERS = [o.value for o in Optimizer]

# Task option name → (flag, click type, help). Options a task does not have are refused by
# the task (trainer.tasks), so every flag can sit on every command.
TASK_OPTION_FLAGS: dict[str, tuple[str, Any, str]] = {
    "n_train": ("--n-train", int, "Training examples (d2l-synthetic: 20)."),
    "n_test": ("--n-test", int, "Test examples (d2l-synthetic: 100)."),
    "num_inputs": ("--num-inputs", int, "Input dimension (d2l-synthetic: 200)."),
    "noise": ("--noise", float, "Label noise std (d2l-synthetic: 0.01)."),
    # resolve_path: a study stores an absolute path, so its workers find the file.
    "train_csv": (
        "--train-csv",
        click.Path(dir_okay=False, resolve_path=True),
        "csv: the training table (header line; numeric features).",
    ),
    "test_csv": (
        "--test-csv",
        click.Path(dir_okay=False, resolve_path=True),
        "csv: a separate test table [split from --train-csv].",
    ),
    "target": ("--target", str, "csv: the column to predict."),
    "val_fraction": ("--val-fraction", float, "csv: share of rows for validation [0.2]."),
    "test_fraction": ("--test-fraction", float, "csv: share of rows for test [0.2]."),
    "standardize": (
        "--standardize/--no-standardize",
        bool,
        "csv: scale features by training statistics [standardize].",
    ),
    "classification": ("--classification", bool, "csv: the target holds class labels."),
    "model": ("--model", click.Choice(["linear", "mlp"]), "Model family [linear]."),
    "hidden": ("--hidden", str, "mlp hidden widths, e.g. 64,32 [64]."),
    "activation": ("--activation", click.Choice(["relu", "tanh", "gelu"]), "mlp [relu]."),
}


def task_option_flags(f: F) -> F:
    for name, (flag, kind, help_text) in reversed(TASK_OPTION_FLAGS.items()):
        if kind is bool:  # default None: an unset flag stays out of the task options
            f = click.option(flag, name, is_flag=True, default=None, help=help_text)(f)
        else:
            f = click.option(flag, name, type=kind, default=None, help=help_text)(f)
    return f


def collect_task_options(kwargs: dict[str, Any]) -> tuple[tuple[str, TaskOption], ...]:
    """Pop the task-option flags out of a command's kwargs; keep only those given."""
    given = {name: kwargs.pop(name) for name in TASK_OPTION_FLAGS}
    return tuple((k, v) for k, v in given.items() if v is not None)


def training_flags(*, defaults: bool = True) -> Callable[[F], F]:
    """Trainer options that are not searched: task, optimizer, lr, batch, epochs, scope.

    `defaults=False` (for `sweeps run`) leaves unset flags as None, so a TOML file's values
    are overridden only by flags actually given.
    """

    def default(value: Any) -> Any:
        return value if defaults else None

    options = (
        click.option(
            "--task",
            default=default("d2l-synthetic"),
            show_default=defaults,
            help="d2l-synthetic, diabetes, digits, csv or python:MODULE:FUNCTION.",
        ),
        click.option("--epochs", type=int, default=default(100), show_default=defaults),
        click.option(
            "--lr", type=float, default=default(0.003), show_default=defaults, help="Learning rate."
        ),
        click.option(
            "--batch-size",
            type=int,
            default=default(5),
            show_default=defaults,
            help="0 means full batch.",
        ),
        click.option(
            "--optimizer",
            type=click.Choice(OPTIMIZERS),
            default=default("sgd"),
            show_default=defaults,
        ),
        click.option(
            "--penalize",
            default=default("weights"),
            show_default=defaults,
            help="Tensors the penalty covers: weights (dim>=2), all, or name globs.",
        ),
        click.option("--seed", type=int, default=default(0), show_default=defaults),
        click.option(
            "--device",
            default=default("auto"),
            show_default=defaults,
            help="auto|cpu|cuda|cuda:N|mps",
        ),
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


MAX_THREADS = 4096


def apply_threads(threads: int | None) -> int:
    """Sets this process's torch threads; refuses a count below 1 as bad input (exit 2)."""
    from sweeps.errors import UsageError
    from trainer.devices import set_cpu_threads

    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise UsageError(f"--threads must be in [1, {MAX_THREADS}], got {threads}")
    return set_cpu_threads(threads)

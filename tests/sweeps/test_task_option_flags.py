"""The task-option flags are made from the tasks' OptionSpecs (trainer.task_options): every
option has one on `sweeps train` and `sweeps run`, typed, with its default in the help."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest

from sweeps.cli import cli
from sweeps.cli.options import collect_task_options
from sweeps.config import TASK_OPTION_KEYS
from trainer.task_options import TASK_OPTIONS, option_names


def command_of(name: str) -> click.Command:
    assert isinstance(cli, click.Group)
    return cli.commands[name]


def params(command: str) -> dict[str, click.Parameter]:
    return {p.name: p for p in command_of(command).params if p.name is not None}


def parsed(command: str, *args: str) -> dict[str, Any]:
    with click.Context(cli) as parent:
        ctx = command_of(command).make_context(command, list(args), parent=parent)
    return dict(ctx.params)


@pytest.mark.parametrize("command", ["train", "run"])
def test_every_task_option_is_a_flag(command: str) -> None:
    flags = params(command)
    for task, specs in TASK_OPTIONS.items():
        for name, spec in specs.items():
            flag = flags[name]
            assert isinstance(flag, click.Option), (task, name)
            assert flag.default is None  # unset: the task's own default applies
            if spec.default not in ("", False, True):
                assert f"[{spec.default}]" in (flag.help or "")
    assert set(option_names()) == TASK_OPTION_KEYS  # what a TOML file may hold


def test_flags_parse_to_the_specs_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    given = parsed(
        "train",
        "--n-train", "7", "--noise", "0.5", "--no-standardize", "--classification",
        "--train-csv", "table.csv", "--model", "mlp",
    )  # fmt: skip
    options = dict(collect_task_options(given))
    assert options == {
        "n_train": 7,
        "noise": 0.5,
        "standardize": False,
        "classification": True,
        "train_csv": str(tmp_path / "table.csv"),  # absolute: workers run elsewhere
        "model": "mlp",
    }
    assert not TASK_OPTION_KEYS & given.keys()  # popped: the command sees the rest
    with pytest.raises(click.BadParameter):
        parsed("train", "--model", "rnn")

"""The defaults `--help` shows are the dataclasses' field defaults: `TrialConfig` for the
training flags, `SweepConfig` for `sweeps run`'s, `ConfirmOptions` for `sweeps confirm`'s."""

from __future__ import annotations

import dataclasses
import re
from enum import Enum
from typing import Any

import pytest

from sweeps.config import SweepConfig, default_penalties
from sweeps.confirm_options import ConfirmOptions
from tests.sweeps.cli_helpers import invoke
from trainer.config import Optimizer, Penalty, TrialConfig

TRAINING = {
    "--task": "task",
    "--epochs": "epochs",
    "--lr": "lr",
    "--batch-size": "batch_size",
    "--optimizer": "optimizer",
    "--penalize": "penalize",
    "--seed": "seed",
    "--device": "device",
}
RUN = {
    "--lambda-min": "lambda_min",
    "--lambda-max": "lambda_max",
    "--trials": "trials",
    "--sampler": "sampler",
    "--pruner": "pruner",
    "--workers": "workers",
    "--batch": "batch",
    "--repeats": "repeats",
    "--grid-points": "grid_points",
}
SHOWN = {  # how each command shows a default: click's show_default, or a help text's end
    "train": r"\[default: ([^\]]+)\]",
    "confirm": r"\[default: ([^\]]+)\]",
    "run": r"\[([^\]:]+)\]\.?$",
}


def _options(command: str) -> dict[str, str]:
    """Each option of `sweeps COMMAND --help` with its help text on one line."""
    text = invoke(command, "--help").stdout
    options: dict[str, str] = {}
    name = None
    for line in text.split("Options:", 1)[1].splitlines():
        match = re.match(r"^  (--[a-z0-9-]+)", line)
        if match:
            name = match.group(1)
            options[name] = line[len(match.group(0)) :].strip()
        elif name is not None and line.startswith("    "):
            options[name] += " " + line.strip()
    return {k: " ".join(v.split()) for k, v in options.items()}


def _default(cls: type[Any], name: str) -> Any:
    found = {f.name: f for f in dataclasses.fields(cls)}[name]
    assert found.default is not dataclasses.MISSING, name
    return found.default


def _equal(shown: str, default: Any) -> bool:
    """A shown default read back as the field's type."""
    if isinstance(default, Enum):
        return shown == default.value
    if isinstance(default, bool | str):
        return shown == str(default)
    return type(default)(shown) == default


def _shown(command: str, option: str, options: dict[str, str]) -> str:
    match = re.search(SHOWN[command], options[option])
    assert match, (option, options[option])
    return match.group(1).strip()


@pytest.mark.parametrize(
    ("command", "cls", "fields"),
    [
        ("train", TrialConfig, {**TRAINING, "--penalty": "penalty", "--lambda": "lambda_"}),
        ("run", TrialConfig, TRAINING),
        ("run", SweepConfig, RUN),
        ("confirm", ConfirmOptions, {"--seeds": "seeds", "--top": "top"}),
    ],
)
def test_help_shows_the_dataclass_defaults(
    command: str, cls: type[Any], fields: dict[str, str]
) -> None:
    options = _options(command)
    for option, name in fields.items():
        shown = _shown(command, option, options)
        assert _equal(shown, _default(cls, name)), (command, option, shown)


def test_run_leaves_training_flags_unset_so_a_config_file_holds() -> None:
    from sweeps.cli.run_cmd import run_command

    params = {p.name: p for p in run_command.params}
    assert all(params[name].default is None for name in [*TRAINING.values(), *RUN.values()])


def test_default_texts_follow_what_the_defaults_do() -> None:
    """The defaults that are behaviour, not a field value: elastic_net's α and the
    penalty set, as TrialConfig and SweepConfig apply them."""
    train = _options("train")
    alpha = re.search(r"\[([0-9.]+)\]", train["--l1-ratio"])
    assert alpha and float(alpha.group(1)) == TrialConfig(penalty=Penalty.ELASTIC_NET).l1_ratio
    text = _options("run")["--penalties"]
    assert f"all {len(Penalty)}," in text
    for optimizer in Optimizer:
        left = set(Penalty) - set(default_penalties(optimizer))
        for penalty in left:
            assert penalty.value in text and optimizer.value in text
    assert SweepConfig("s").penalties == default_penalties(TrialConfig().optimizer)
    history = re.search(r"\[(\w+):", _options("run")["--history"])
    assert history and history.group(1) == _default(SweepConfig, "history").value


def test_a_stored_trial_without_optional_params_takes_the_defaults() -> None:
    params = TrialConfig().as_params()
    for key in ("penalize", "optimizer", "device"):
        params.pop(key)
    assert TrialConfig.from_params(params) == TrialConfig(data_seed=TrialConfig().seed)

"""`--help` says what a user needs: the environment variables for the stores, only the
options a command uses, a first line that says what the command does."""

from __future__ import annotations

import pytest

from sweeps.cli import cli
from tests.sweeps.cli_helpers import invoke

COMMANDS = sorted(cli.commands)  # every command of the group: none can be left out
# Read the results tables only; `export` also names the MLflow store, never to replace it.
WITHOUT_MLFLOW = {"studies", "trials", "best", "compare"}


def test_the_commands_are_the_cli_contract() -> None:
    assert COMMANDS == [
        "best",
        "check",
        "compare",
        "confirm",
        "export",
        "run",
        "studies",
        "train",
        "trials",
        "ui",
        "worker",
    ]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_the_environment_variables(command: str) -> None:
    text = " ".join(invoke(command, "--help").stdout.split())
    assert "SWEEPS_HOME" in text and "SWEEPS_STORAGE" in text
    assert ("SWEEPS_TRACKING_URI" in text) == (command not in WITHOUT_MLFLOW)
    assert ("--tracking-uri" in text) == (command not in WITHOUT_MLFLOW)


def test_every_command_says_what_it_does_in_the_listing() -> None:
    listing = invoke("--help").stdout.splitlines()
    for command in COMMANDS:
        [line] = [line for line in listing if line.split()[:1] == [command]]
        assert len(line.split()) > 2, line  # the command and a description


def test_check_says_what_it_checks() -> None:
    listing = invoke("--help").stdout
    line = next(line for line in listing.splitlines() if line.strip().startswith("check"))
    assert "Optuna" in line and "MLflow" in line

"""`--help` says what a user needs: the environment variables for the stores, only the
options a command uses, a first line that says what the command does."""

from __future__ import annotations

import pytest

from tests.sweeps.cli_helpers import invoke

COMMANDS = ["run", "worker", "train", "ui", "check", "studies", "trials", "best", "compare"]
QUERIES = {"studies", "trials", "best", "compare", "export"}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_the_environment_variables(command: str) -> None:
    text = " ".join(invoke(command, "--help").stdout.split())
    assert "SWEEPS_HOME" in text and "SWEEPS_STORAGE" in text
    assert ("SWEEPS_TRACKING_URI" in text) == (command not in QUERIES)
    assert ("--tracking-uri" in text) == (command not in QUERIES)


def test_check_says_what_it_checks() -> None:
    listing = invoke("--help").stdout
    line = next(line for line in listing.splitlines() if line.strip().startswith("check"))
    assert "Optuna" in line and "MLflow" in line

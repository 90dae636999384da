"""SWEEPS_DB_RETRY_S: how long a dropped database connection is retried."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sweeps.cli_helpers import assert_usage_error, invoke

COMMANDS = [
    ["run", "--study", "r", "--trials", "1", "--epochs", "2", "--no-track"],
    ["trials", "--study", "r"],
    ["check", "--study", "r"],
]


@pytest.mark.parametrize("window", ["abc", "-1", "nan", "inf", ""])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_bad_retry_window_is_refused_before_any_store_opens(
    tmp_path: Path, window: str, command: list[str]
) -> None:
    home = tmp_path / "h"
    result = invoke(*command, "--home", str(home), env={"SWEEPS_DB_RETRY_S": window})
    assert_usage_error(result, "SWEEPS_DB_RETRY_S must be a number of seconds >= 0", repr(window))
    assert not home.exists()


def test_a_retry_window_of_zero_is_accepted(tmp_path: Path) -> None:
    args = ["run", "--study", "r", "--trials", "1", "--epochs", "2", "--no-track"]
    result = invoke(*args, "--home", str(tmp_path / "h"), env={"SWEEPS_DB_RETRY_S": "0"})
    assert result.exit_code == 0, result.stderr

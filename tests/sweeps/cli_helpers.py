"""Run the CLI in-process and check the one-line-error contract."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner, Result

from sweeps.cli import cli


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def invoke_json(*args: str, env: dict[str, str] | None = None) -> Any:
    result = invoke(*args, "--json", env=env)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def assert_usage_error(result: Result, *fragments: str) -> None:
    """Exit 2, exactly one line on stderr containing the fragments, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]

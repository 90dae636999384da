"""Bad input never gives a traceback and never writes: one line on stderr, exit 2, no home,
no study; and the same study name works with valid values afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sweeps.study_helpers import cli_env, run_cli

BAD_VALUES = [
    ("--lambda-max", "inf"),
    ("--lambda-max", "nan"),
    ("--lambda-min", "nan"),
    ("--lambda-min", "-inf"),
    ("--timeout", "nan"),
    ("--timeout", "inf"),
    ("--lr", "inf"),
    ("--noise", "nan"),
    ("--noise", "inf"),
]


@pytest.mark.parametrize(("flag", "value"), BAD_VALUES)
def test_a_non_finite_value_is_refused_before_anything_is_written(
    tmp_path: Path, flag: str, value: str
) -> None:
    home = tmp_path / "home"
    env = cli_env(home)
    args = ["run", "--study", "s1", "--trials", "1", "--epochs", "2", "--no-track", "--quiet"]
    refused = run_cli(*args, flag, value, env=env)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sweeps: error:"), refused.stderr
    assert "finite" in lines[0] and flag.lstrip("-").split("-")[-1] in lines[0]
    assert not home.exists()
    done = run_cli(*args, env=env)  # the name is not poisoned
    assert done.returncode == 0, done.stderr

"""`sweeps export`: the trials as CSV or JSON, to stdout or a file written whole, with the
permissions any file the user writes gets; a path it cannot write is one line."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.sweeps.cli_helpers import assert_usage_error, invoke, invoke_json


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> str:
    home = str(tmp_path_factory.mktemp("export") / "home")
    args = ["--study", "e", "--trials", "3", "--epochs", "3", "--no-track", "--home", home]
    invoke_json("run", *args, "--quiet")
    return home


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    before = os.umask(mask)
    try:
        yield
    finally:
        os.umask(before)


def test_csv_and_json_hold_the_same_trials(home: str, tmp_path: Path) -> None:
    trials = invoke_json("trials", "--study", "e", "--home", home)
    out = tmp_path / "e.csv"
    assert invoke("export", "--study", "e", "--format", "csv", "-o", str(out), "--home", home)
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [int(r["number"]) for r in rows] == [t["number"] for t in trials]
    exported = invoke("export", "--study", "e", "--format", "json", "--home", home).stdout
    assert [t["number"] for t in json.loads(exported)] == [t["number"] for t in trials]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_the_file_gets_the_umasks_permissions(
    home: str, tmp_path: Path, mask: int, mode: int
) -> None:
    out = tmp_path / "e.json"
    with _umask(mask):
        done = invoke("export", "--study", "e", "--format", "json", "-o", str(out), "--home", home)
    assert done.exit_code == 0, done.stderr
    assert out.stat().st_mode & 0o777 == mode


def test_a_path_that_cannot_be_written_is_one_line(home: str, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "e.csv"
    args = ["export", "--study", "e", "--format", "csv", "--home", home, "-o"]
    assert_usage_error(invoke(*args, str(missing)), "does not exist")
    # /proc takes no new files, whoever asks (root included)
    assert_usage_error(invoke(*args, "/proc/e.csv"), "cannot write '/proc/e.csv'")

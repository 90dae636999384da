"""`sweeps export`: the trials as CSV or JSON, to stdout or a file written whole, with the
permissions any file the user writes gets; a path it cannot write is one line."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator
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


def _digest(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "name",
    [
        "sweeps.db",
        "sweeps.db-wal",
        "mlflow.db",
        "mlflow.db-shm",
        "sweeps.db.migrate.lock",
        "mlflow-ui.log",
        "mlartifacts/1/abc/artifacts/config.json",
        "../home/./sweeps.db",
    ],
)
def test_export_refuses_the_stores_files(home: str, name: str) -> None:
    before = _digest(Path(home))
    args = ["export", "--study", "e", "--format", "csv", "--home", home, "-o"]
    assert_usage_error(invoke(*args, f"{home}/{name}"), "write the export to another file")
    assert _digest(Path(home)) == before  # nothing replaced, no temporary file left


@pytest.mark.parametrize("link", [os.symlink, os.link])
def test_export_refuses_another_name_of_the_study_database(
    home: str, tmp_path: Path, link: Callable[[Path, Path], None]
) -> None:
    alias = tmp_path / "alias.db"
    link(Path(home) / "sweeps.db", alias)
    before = _digest(Path(home))
    args = ["export", "--study", "e", "--format", "json", "--home", home, "-o", str(alias)]
    assert_usage_error(invoke(*args), "is the sweeps storage", "sweeps.db")
    assert _digest(Path(home)) == before


def test_export_refuses_named_stores_outside_the_home(home: str, tmp_path: Path) -> None:
    storage = f"sqlite:///{home}/sweeps.db"
    tracking = tmp_path / "elsewhere" / "tracking.db"  # need not exist yet
    tracking.parent.mkdir()
    args = ["export", "--study", "e", "--format", "csv", "--home", str(tmp_path / "other")]
    args += ["--storage", storage, "--tracking-uri", f"sqlite:///{tracking}", "-o"]
    assert_usage_error(invoke(*args, f"{home}/sweeps.db"), "is the sweeps storage")
    assert_usage_error(invoke(*args, str(tracking)), "is the MLflow store")
    assert not tracking.exists() and not (tmp_path / "other").exists()


def test_export_refuses_a_directory_and_a_pipe(home: str, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    args = ["export", "--study", "e", "--format", "csv", "--home", home, "-o"]
    assert_usage_error(invoke(*args, str(tmp_path)), "is a directory")
    assert_usage_error(invoke(*args, str(fifo)), "is not a regular file", "-o -")


def test_dash_is_standard_output(
    home: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    done = invoke("export", "--study", "e", "--format", "csv", "--home", home, "-o", "-")
    assert done.exit_code == 0, done.stderr
    assert done.stdout.startswith("number,")
    assert list(tmp_path.iterdir()) == []  # no file named "-"


def test_a_symlink_is_followed_and_kept(home: str, tmp_path: Path) -> None:
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    done = invoke("export", "--study", "e", "--format", "csv", "--home", home, "-o", str(link))
    assert done.exit_code == 0, done.stderr
    assert link.is_symlink() and real.read_text().startswith("number,")

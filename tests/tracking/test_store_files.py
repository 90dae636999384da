"""A damaged, foreign or unwritable store file is one line naming it, before any work."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from tracking.errors import StoreFileError
from tracking.store_files import check_store_file, check_writable_dir, holds_tables


def _sqlite(path: Path, *tables: str, rows: int = 0) -> Path:
    conn = sqlite3.connect(path)
    for table in tables:
        conn.execute(f"CREATE TABLE {table} (id INTEGER, payload TEXT)")
        conn.executemany(
            f"INSERT INTO {table} VALUES (?, ?)", [(i, "x" * 500) for i in range(rows)]
        )
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize(
    ("owner", "tables"),
    [("sweeps", ("studies", "trials", "alembic_version")), ("mlflow", ("experiments", "runs"))],
)
def test_an_owners_store_an_empty_one_and_a_missing_one_pass_untouched(
    tmp_path: Path, owner: str, tables: tuple[str, ...]
) -> None:
    own = _sqlite(tmp_path / "own.db", *tables)
    (tmp_path / "zero.db").touch()
    files = [own, _sqlite(tmp_path / "empty.db"), tmp_path / "zero.db"]
    before = {path: path.read_bytes() for path in files}
    for path in [*files, tmp_path / "missing" / "new.db"]:
        check_store_file(path, owner, write=True)  # raises StoreFileError where it fails
    assert {path: path.read_bytes() for path in files} == before  # the check writes nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "own.db", "zero.db"]
    other = "mlflow" if owner == "sweeps" else "sweeps"
    with pytest.raises(StoreFileError, match="another program's tables"):
        check_store_file(own, other)  # the owner's tables were read, not waved through


def test_random_bytes_are_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "sweeps.db"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(StoreFileError, match=r"sweeps\.db is not an SQLite database"):
        check_store_file(path, "sweeps")


def test_a_truncated_file_is_named_with_its_sizes(tmp_path: Path) -> None:
    path = _sqlite(tmp_path / "mlflow.db", "experiments", "runs", rows=200)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(StoreFileError, match=r"MLflow store .*mlflow\.db is truncated \(\d+ of"):
        check_store_file(path, "mlflow")


def test_another_programs_tables_are_refused(tmp_path: Path) -> None:
    path = _sqlite(tmp_path / "sweeps.db", "customers", "orders")
    with pytest.raises(StoreFileError, match=r"another program's tables \(customers, orders\)"):
        check_store_file(path, "sweeps")
    with pytest.raises(StoreFileError, match="another program's tables"):
        check_store_file(_sqlite(tmp_path / "m.db", "studies", "trials"), "mlflow")


def test_a_damaged_schema_page_is_refused(tmp_path: Path) -> None:
    path = _sqlite(tmp_path / "sweeps.db", "studies", rows=10)
    data = bytearray(path.read_bytes())
    data[100:400] = os.urandom(300)  # the schema table's page, past the header
    path.write_bytes(bytes(data))
    with pytest.raises(StoreFileError, match=r"sweeps\.db (is damaged|cannot be opened)"):
        check_store_file(path, "sweeps")


def _checked_as_a_user(path: Path, *, write: bool) -> str:
    """`check_store_file(path)`'s error (or "ok") for an ordinary user: root writes through
    any permission bits, so as root the check runs in a child that becomes `nobody` once
    its imports are done."""
    become = "os.setgid(65534); os.setuid(65534)\n" if os.geteuid() == 0 else ""
    code = (
        "import os; from pathlib import Path; from tracking.store_files import check_store_file\n"
        "from tracking.errors import StoreFileError\n"
        f"{become}"
        "try:\n"
        f"    check_store_file(Path({str(path)!r}), 'sweeps', write={write})\n"
        "    print('ok')\n"
        "except StoreFileError as e:\n"
        "    print(e)\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=True,
    )
    return done.stdout.strip()


def test_read_only_files_and_folders_are_refused_for_writing() -> None:
    top = Path(tempfile.mkdtemp(prefix="sweeps-ro-"))  # not under pytest's root-only tmp
    try:
        top.chmod(0o755)
        path = _sqlite(top / "sweeps.db", "studies")
        path.chmod(0o444)
        assert _checked_as_a_user(path, write=False) == "ok"  # reading is fine
        assert _checked_as_a_user(path, write=True).endswith("sweeps.db is read-only")
        folder = top / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        assert "is not writable" in _checked_as_a_user(folder / "sweeps.db", write=True)
        with pytest.raises(StoreFileError, match="not writable"):
            check_writable_dir(path / "mlartifacts", "the artifacts folder")  # under a file
    finally:
        shutil.rmtree(top)


def test_holds_tables_looks_without_creating(storage_url: str) -> None:
    """Whether a store exists is answered without making it: no SQLite file, no table."""
    assert not holds_tables(storage_url, "mlflow")
    if storage_url.startswith("sqlite"):
        assert not Path(sa.make_url(storage_url).database or "").exists()
        return
    engine = sa.create_engine(storage_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE experiments (id INTEGER)"))
        assert holds_tables(storage_url, "mlflow") and not holds_tables(storage_url, "sweeps")
    finally:
        engine.dispose()
    assert holds_tables("http://127.0.0.1:5000", "mlflow")  # a server: not looked into

"""Bad input never gives a traceback and never writes: one line on stderr, exit 2, no home,
no study; and the same study name works with valid values afterwards."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.services import free_port
from tests.sweeps.cli_helpers import assert_usage_error, invoke, invoke_json
from tests.sweeps.study_helpers import cli_env, run_cli, sweeps_cmd

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


@pytest.mark.slow
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


@pytest.fixture(scope="module")
def studied_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with one small tracked study: the template each damage test copies."""
    home = tmp_path_factory.mktemp("template") / "home"
    args = ["run", "--study", "s", "--trials", "2", "--epochs", "2", "--penalties", "l2"]
    done = run_cli(*args, "--quiet", env=cli_env(home))
    assert done.returncode == 0, done.stderr
    return home


def _damage(path: Path, kind: str) -> None:
    for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        extra.unlink(missing_ok=True)  # the checkpointed file alone
    if kind == "none":
        return
    if kind == "random":
        path.write_bytes(os.urandom(8192))
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    else:  # another program's database
        path.unlink()
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE customers (id INTEGER)")
        conn.commit()
        conn.close()


COMMANDS = {
    "sweeps.db": [
        ["studies"],
        ["trials", "--study", "s"],
        ["check", "--study", "s"],
        ["run", "--study", "s", "--trials", "1", "--epochs", "2", "--penalties", "l2"],
    ],
    "mlflow.db": [
        ["check", "--study", "s"],
        ["run", "--study", "s", "--trials", "1", "--epochs", "2", "--penalties", "l2"],
        ["train", "--penalty", "l2", "--lambda", "1", "--epochs", "2"],
        ["ui", "--port", "1"],
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["random", "truncated", "foreign"])
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_damaged_store_is_one_line_naming_it_and_nothing_is_written(
    tmp_path: Path, studied_home: Path, name: str, kind: str
) -> None:
    home = tmp_path / "home"
    shutil.copytree(studied_home, home)
    path = home / name
    _damage(path, kind)
    before = _contents(home)
    for args in COMMANDS[name]:
        done = run_cli(*args, env=cli_env(home))
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, (args, done.stderr[-1500:])
        assert lines[0].startswith("sweeps: error:") and str(path) in lines[0], lines
    assert _contents(home) == before


def _contents(home: Path) -> dict[Path, bytes]:
    """Every file's bytes; a WAL file only if it holds pages (reading a WAL database
    creates an empty one, and its -shm index, without writing anything)."""
    return {
        p: p.read_bytes()
        for p in home.rglob("*")
        if p.is_file()
        and not p.name.endswith("-shm")
        and not (p.name.endswith("-wal") and p.stat().st_size == 0)
    }


@pytest.mark.parametrize(
    ("option", "url"),
    [
        ("--tracking-uri", "postgresql://sweeps:pa55word@127.0.0.1:{port}/mlflow"),
        ("--tracking-uri", "http://sweeps:pa55word@127.0.0.1:{port}"),
        ("--storage", "postgresql://sweeps:pa55word@127.0.0.1:{port}/sweeps"),
    ],
)
@pytest.mark.slow
def test_an_unreachable_store_is_refused_at_once_and_nothing_is_written(
    tmp_path: Path, option: str, url: str
) -> None:
    """A closed port: one try, not MLflow's minutes of retries; the password masked."""
    home = tmp_path / "home"
    args = ["run", "--study", "s", "--trials", "1", "--epochs", "2", "--quiet"]
    done = run_cli(*args, option, url.format(port=free_port()), env=cli_env(home), timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-1500:]
    assert "unreachable" in lines[0] or "cannot reach" in lines[0], lines
    assert "pa55word" not in lines[0] and "***" in lines[0]
    assert not home.exists()


TOML_CASES = [
    (b"study = 5\n", "option study must be str, got 5 (int)"),
    (b'study = "t"\ntrials = 2.5\n', "option trials must be int, got 2.5 (float)"),
    (b'study = "t"\nbatch = true\n', "option batch must be int, got True (bool)"),
    (b'study = "t"\nlambda-max = "big"\n', "option lambda-max must be float"),
    (b'study = "t"\nlambda-min = 0.1\nlambda_min = 0.2\n', "gives lambda-min twice"),
    (b'study = "t"\n[sweep]\ntrials = 3\n', None),  # a [sweep] table is fine
    (b'study = "t"\ntrials = 3\n[sweep]\ntrials = 4\n', "gives trials twice"),
    (b'study = "\xff\xfe"\n', "is not UTF-8 text"),
    (b'study = "t"\nn-train = 2.5\n', "task option n_train must be a whole number"),
    (b'study = "t"\nnoise = true\n', "task option noise must be a number"),
]


@pytest.mark.parametrize(("toml", "fragment"), TOML_CASES)
def test_a_config_file_of_the_wrong_shape_is_one_line(
    tmp_path: Path, toml: bytes, fragment: str | None
) -> None:
    config = tmp_path / "sweep.toml"
    config.write_bytes(toml)
    home = tmp_path / "home"
    result = invoke(
        "run", "--config", str(config), "--create-only", "--no-track", "--home", str(home)
    )
    if fragment is None:
        assert result.exit_code == 0, result.stderr
        return
    assert_usage_error(result, fragment)
    assert not home.exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--study", "bell\x07"], "--study must be printable text"),
        (["--study", "x" * 201], "at most 200 characters"),
        (["--study", "sweeps-train"], "--study 'sweeps-train' is reserved: `sweeps train` logs"),
        (["--study", "s", "--storage", "postgresql://u:pw@host:abc/db"], "malformed storage URL"),
        (["--study", "s", "--tracking-uri", "postgresql://u:pw@h:abc/db"], "malformed"),
    ],
)
def test_bad_names_and_urls_are_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    home = tmp_path / "home"
    result = invoke("run", *args, "--create-only", "--home", str(home))
    assert_usage_error(result, fragment)
    assert "pw@" not in result.stderr and not home.exists()


@pytest.mark.parametrize(
    ("command", "args", "fragment"),
    [
        ("train", ["--seed", "4294967296"], "seed must be in [0, 4294967295]"),
        ("train", ["--seed", "-1"], "seed must be in [0, 4294967295]"),
        ("train", ["--lr", "1e308"], "lr must be a finite number in (0, 1e+06]"),
        ("train", ["--epochs", "99999999999999999999"], "epochs must be in [1, 10000000]"),
        ("train", ["--num-inputs", "99999999999999999999"], "num_inputs must be <"),
        ("train", ["--n-train", "999999999999"], "n_train must be <"),
        ("train", ["--threads", "99999999999999999999"], "--threads must be in [1, 4096]"),
        ("train", ["--penalty", "none", "--lambda", "3"], "has no effect with --penalty none"),
        ("run", ["--study", "s", "--repeats", "99999999999999999999"], "--repeats must be in"),
        ("run", ["--study", "s", "--trials", "99999999999999999999"], "--trials must be in"),
    ],
)
def test_out_of_range_counts_sizes_and_names_are_one_line(
    tmp_path: Path, command: str, args: list[str], fragment: str
) -> None:
    """Values Python takes but the trainer cannot (a 2**64 seed, a 10**20 size, a float32
    overflow), counts that would run for ever, a name that would split the error line."""
    home = tmp_path / "home"
    result = invoke(
        command, *args, "--home", str(home), *(["--no-track"] if command != "trials" else [])
    )
    assert_usage_error(result, fragment)
    assert not home.exists()


def test_a_python_task_calling_sys_exit_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "exits_task.py").write_text("import sys\ndef build(seed):\n    sys.exit(3)\n")
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "--task", "python:exits_task:build", "--no-track")
    assert_usage_error(result, "python:exits_task:build raised SystemExit: 3")


def test_a_tracking_database_that_is_down_stops_ui_at_once(tmp_path: Path) -> None:
    uri = f"postgresql://sweeps:pa ss@127.0.0.1:{free_port()}/mlflow"
    result = invoke("ui", "--home", str(tmp_path), "--tracking-uri", uri)
    assert_usage_error(result, "is unreachable")
    assert "pa ss" not in result.stderr


def test_a_name_with_a_line_break_keeps_the_error_on_one_line(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    invoke_json("run", "--study", "s", "--create-only", "--no-track", "--home", home)
    assert_usage_error(invoke("trials", "--study", "a\nb", "--home", home), "'a\\nb'")
    assert_usage_error(invoke("best", "--study", "a\rb", "--home", home), "'a\\rb'")


@pytest.mark.slow
def test_damaged_pages_past_the_schema_are_one_line(tmp_path: Path, studied_home: Path) -> None:
    """Pages the up-front check does not read (it reads the header and the schema): the
    database fails beneath the command, which says so in one line."""
    home = tmp_path / "home"
    shutil.copytree(studied_home, home)
    path = home / "sweeps.db"
    _damage(path, "none")  # checkpointed file alone
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[3 * page : 11 * page] = os.urandom(8 * page)
    path.write_bytes(bytes(data))
    done = run_cli("trials", "--study", "s", env=cli_env(home))  # reads every trial's rows
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-1500:]
    assert lines[0].startswith("sweeps: error:"), lines


def test_trials_and_hidden_widths_beyond_their_bounds_are_refused(tmp_path: Path) -> None:
    """Counts and widths too large for any machine (2**64) are a usage error, not an
    overflow or a model that cannot be allocated."""
    home = str(tmp_path / "home")
    invoke_json("run", "--study", "s", "--create-only", "--no-track", "--home", home)
    worker = ["worker", "--study", "s", "--no-track", "--home", home, "--trials"]
    assert_usage_error(invoke(*worker, str(2**64)), "--trials must be in [1, 10000000]")
    mlp = ["--model", "mlp", "--no-track", "--home", home, "--hidden"]
    assert_usage_error(invoke("train", *mlp, str(2**64)), "widths in [1, 100000]")
    assert_usage_error(invoke("train", *mlp, "64,100000000000"), "widths in [1, 100000]")


def test_export_refuses_to_replace_a_device_and_reports_a_full_stdout(tmp_path: Path) -> None:
    """Renaming over /dev/full would replace the device (as root); writing to it fails."""
    home = str(tmp_path / "home")
    invoke_json(
        "run", "--study", "s", "--trials", "1", "--epochs", "2", "--no-track", "--home", home
    )
    args = ["export", "--study", "s", "--format", "csv", "--home", home]
    assert_usage_error(invoke(*args, "-o", "/dev/full"), "is not a regular file")
    assert Path("/dev/full").is_char_device()
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            sweeps_cmd(*args), stdout=full, stderr=subprocess.PIPE, text=True, check=False
        )
    assert done.returncode == 2 and "cannot write to standard output" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["trials", "--study", "s", "--json"],
        ["trials", "--study", "s"],
        ["best", "--study", "s"],
        ["best", "--study", "s", "--json"],
        ["run", "--study", "s", "--trials", "1", "--epochs", "2", "--no-track", "--json"],
        ["run", "--study", "s", "--trials", "1", "--epochs", "2", "--no-track"],
    ],
    ids=" ".join,
)
@pytest.mark.slow
def test_a_full_standard_output_is_one_line_and_the_study_stays(
    tmp_path: Path, args: list[str]
) -> None:
    home = tmp_path / "home"
    invoke_json(
        "run", "--study", "s", "--trials", "1", "--epochs", "2", "--no-track", "--home", str(home)
    )
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            sweeps_cmd(*args, "--home", str(home)),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "sweeps: error: cannot write to standard output: No space left on device"
    )
    assert "Traceback" not in done.stderr
    finished = len(invoke_json("trials", "--study", "s", "--home", str(home)))
    assert finished > 1 if args[0] == "run" else finished == 1  # a run's trials are kept


@pytest.mark.parametrize("command", [["train", "--epochs", "1"], ["studies"]])
def test_a_home_that_is_a_loop_of_symlinks_is_one_line(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    result = invoke(*command, "--home", str(tmp_path / "a"))
    assert_usage_error(result, "--home", "cannot be resolved")


@pytest.mark.parametrize("spelling", ["{d}/./x.db", "{d}/sub/../x.db", "{d}/link.db"])
def test_one_sqlite_file_for_both_stores_is_refused_however_spelled(
    tmp_path: Path, spelling: str
) -> None:
    """Optuna's and MLflow's schemas cannot share a database (both keep alembic_version)."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.db").symlink_to(tmp_path / "x.db")
    storage = f"sqlite:///{tmp_path}/x.db"
    tracking = "sqlite:///" + spelling.format(d=tmp_path)
    args = ["run", "--study", "s", "--trials", "1", "--epochs", "2", "--home", str(tmp_path)]
    result = invoke(*args, "--storage", storage, "--tracking-uri", tracking)
    assert_usage_error(result, "must differ")
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("name", ["a%20b", "h?x", "a?mode=ro#x"])
def test_a_home_with_url_characters_keeps_its_stores_in_it(tmp_path: Path, name: str) -> None:
    """%, ? and # in HOME are a path's characters, not a URL's escapes, query or fragment."""
    (tmp_path / "a b").mkdir()
    home = tmp_path / name
    args = ["--study", "s", "--home", str(home)]
    invoke_json("run", *args, "--trials", "1", "--epochs", "2", "--no-track")
    assert (home / "sweeps.db").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"a b", name})
    assert [t["state"] for t in invoke_json("trials", *args)] == ["COMPLETE"]


LONG_NAME = "a" * 300


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["trials", "--study", "s", "--home", "{t}/" + LONG_NAME], "--home"),
        (["run", "--study", "s", "--no-track", "--home", "{t}/sub/" + LONG_NAME], "--home"),
        (["run", "--study", "s", "--no-track", "--home", "{t}/sub" + "/b" * 2100], "--home"),
        (["train", "--epochs", "1", "--home", "{t}/" + LONG_NAME], "--home"),
        (["best", "--study", "s", "--storage", "sqlite:///{t}/" + LONG_NAME], "SQLite file"),
        (["train", "--epochs", "1", "--tracking-uri", "sqlite:///{t}/" + LONG_NAME], "SQLite"),
    ],
    ids=["trials", "run-new-home", "run-past-path-max", "train", "storage", "tracking"],
)
def test_a_path_too_long_for_the_file_system_is_one_line_and_creates_nothing(
    tmp_path: Path, args: list[str], fragment: str
) -> None:
    result = invoke(*(arg.replace("{t}", str(tmp_path)) for arg in args))
    assert_usage_error(result, fragment, "longer than the file system holds")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1e3", "", "1.5"])
def test_a_bad_heartbeat_is_one_line_before_the_home_is_created(tmp_path: Path, value: str) -> None:
    home = tmp_path / "home"
    args = ["run", "--study", "s", "--trials", "1", "--epochs", "2", "--home", str(home)]
    result = invoke(*args, "--no-track", env={"SWEEPS_HEARTBEAT_S": value})
    assert_usage_error(result, "SWEEPS_HEARTBEAT_S")
    assert not home.exists()


@pytest.mark.parametrize("track", [[], ["--no-track"]], ids=["tracked", "untracked"])
def test_a_storage_where_no_file_can_be_made_is_refused_before_the_home_is_created(
    tmp_path: Path, track: list[str]
) -> None:
    """/proc passes access(W_OK) as root, yet holds no new file."""
    home = tmp_path / "home"
    args = ["run", "--study", "s", "--trials", "1", "--epochs", "2", "--home", str(home)]
    result = invoke(*args, *track, "--storage", "sqlite:////proc/x.db")
    assert_usage_error(result, "/proc", "is not writable")
    assert not home.exists()


READERS = [
    ["worker", "--study", "nope"],
    ["worker", "--study", "nope", "--no-track"],
    ["check", "--study", "nope"],
    ["check", "--study", "nope", "--repair"],
    ["best", "--study", "nope"],
    ["trials", "--study", "nope"],
    ["studies"],
    ["compare"],
    ["export", "--study", "nope", "--format", "csv"],
]


@pytest.mark.parametrize("home_exists", [False, True])
@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_joining_or_reading_a_missing_study_creates_no_sqlite_store(
    tmp_path: Path, args: list[str], home_exists: bool
) -> None:
    home = tmp_path / "home"
    if home_exists:
        home.mkdir()
    result = invoke(*args, "--home", str(home))
    assert_usage_error(result, "sweeps")  # no such study, or no storage at all
    assert sorted(tmp_path.rglob("*")) == ([home] if home_exists else [])


@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_joining_or_reading_a_missing_study_creates_no_tables_in_postgresql(
    tmp_path: Path, postgres_url: str, args: list[str]
) -> None:
    home = tmp_path / "home"
    result = invoke(*args, "--home", str(home), "--storage", postgres_url)
    if result.exit_code != 0:  # `studies` and `compare` of an empty storage: nothing to list
        assert_usage_error(result, "no study named 'nope'")
    engine = sa.create_engine(postgres_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
    assert not home.exists()


def test_check_of_an_untracked_study_creates_no_mlflow_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run = ["run", "--study", "s", "--trials", "1", "--epochs", "2", "--no-track", "--quiet"]
    invoke_json(*run, "--home", str(home))
    before = sorted(home.iterdir())
    checked = invoke("check", "--study", "s", "--home", str(home))
    assert checked.exit_code == 1, checked.output
    assert "trial 0: no MLflow run (the study has no experiment here)" in checked.stdout
    assert sorted(home.iterdir()) == before  # no mlflow.db, no artifacts folder


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--study", "s", "--trials", "1", "--epochs", "2"],
        ["train", "--epochs", "2"],
        ["worker", "--study", "s"],
        ["best", "--study", "s"],
        ["check", "--study", "s"],
        ["ui"],
    ],
    ids=lambda c: c[0],
)
def test_an_empty_home_is_refused_and_nothing_lands_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert_usage_error(invoke(*command, "--home", ""), "--home is empty")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("source", ["/dev/zero", "/dev/urandom", "huge", "long comment"])
def test_a_config_that_is_a_device_or_too_large_is_one_line(tmp_path: Path, source: str) -> None:
    """Read no further than the largest sweep file allowed (a device never ends)."""
    config = tmp_path / "sweep.toml"
    if source == "huge":
        with config.open("wb") as f:
            f.truncate(10 * 2**30)  # sparse: 10 GiB of nothing on disk
    elif source == "long comment":
        config.write_text("study = 'big'\n# " + "x" * 2**21 + "\n")  # valid TOML, 2 MiB
    else:
        config = Path(source)
    home = tmp_path / "home"
    args = ["run", "--config", str(config), "--trials", "1", "--epochs", "2", "--no-track"]
    result = invoke(*args, "--home", str(home))
    fragment = "not a regular file" if source.startswith("/dev") else "larger than 1024 KiB"
    assert_usage_error(result, str(config), fragment)
    assert not home.exists()


def test_a_config_through_a_pipe_is_read(tmp_path: Path) -> None:
    """`--config <(...)` hands the file over as a pipe."""
    home = tmp_path / "home"
    read, write = os.pipe()
    with os.fdopen(write, "w") as f:
        f.write('study = "piped"\nlr = 0.01\n')
    try:
        args = ["run", "--config", f"/dev/fd/{read}", "--create-only", "--no-track"]
        created = invoke_json(*args, "--home", str(home))
    finally:
        os.close(read)
    assert created["study"] == "piped"

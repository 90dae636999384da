"""`sweeps ui` exposes nothing by default: what it really execs, and what it says.

The CLI runs in a subprocess and is stopped as soon as it has exec'd `mlflow server`
(same pid), so `/proc/<pid>/cmdline` and `/proc/<pid>/environ` show exactly the server
command line and environment, before the server gets to bind anything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from sweeps.cli.ui_cmd import ui_args
from tests.services import free_port
from tests.sweeps.cli_helpers import assert_usage_error, invoke
from tests.sweeps.study_helpers import cli_env, sweeps_cmd


@dataclass(frozen=True)
class Execd:
    argv: list[str]  # the `mlflow server` command line, interpreter first
    environ: dict[str, str]
    stderr: str  # what `sweeps ui` printed before the exec

    def option(self, name: str) -> str:
        return self.argv[self.argv.index(name) + 1]


def _proc_strings(pid: int, name: str) -> list[str]:
    return Path(f"/proc/{pid}/{name}").read_bytes().decode().split("\0")[:-1]


def _exec_ui(home: Path, *args: str, timeout_s: float = 60) -> Execd:
    """Run `sweeps ui ARGS` until it has become `mlflow server`, then kill it."""
    proc = subprocess.Popen(
        sweeps_cmd("ui", *args),
        env=cli_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the group also holds anything the server started
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            argv = _proc_strings(proc.pid, "cmdline")
            if "server" in argv:  # exec'd: python .../mlflow server ...
                environ = dict(s.split("=", 1) for s in _proc_strings(proc.pid, "environ"))
                break
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, f"no exec within {timeout_s}s: {argv}"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=30)
    return Execd(argv, environ, stderr)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    # `sweeps ui` only checks that the store exists; the server is killed before opening it
    (tmp_path / "mlflow.db").touch()
    yield tmp_path


def test_ui_args_bind_what_they_are_given() -> None:
    args = ui_args("127.0.0.1", 5000, None, None)
    assert args[1:] == [
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        "5000",
        "--workers",
        "1",
    ]
    assert Path(args[0]).name == "mlflow"


def test_ui_serves_loopback_by_default_without_warning(home: Path) -> None:
    port = free_port()
    execd = _exec_ui(home, "--home", str(home), "--port", str(port))
    assert execd.option("--host") == "127.0.0.1"
    assert execd.option("--port") == str(port)
    assert "--backend-store-uri" not in execd.argv
    assert execd.environ["MLFLOW_BACKEND_STORE_URI"] == f"sqlite:///{home / 'mlflow.db'}"
    assert execd.option("--default-artifact-root") == (home / "mlartifacts").as_uri()
    assert "--allowed-hosts" not in execd.argv
    assert "warning" not in execd.stderr
    assert f"MLflow UI on http://127.0.0.1:{port}" in execd.stderr
    # the UI and server would otherwise try to phone home
    assert execd.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"


def test_ui_on_another_interface_warns_and_passes_allowed_hosts(home: Path) -> None:
    execd = _exec_ui(
        home,
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
        "--allowed-hosts",
        "sweeps.example.org,sweeps.example.org:5000",
    )
    assert execd.option("--host") == "0.0.0.0"
    assert execd.option("--allowed-hosts") == "sweeps.example.org,sweeps.example.org:5000"
    first = execd.stderr.splitlines()[0]
    assert first.startswith("sweeps: warning: binding 0.0.0.0 exposes the UI")
    assert "without authentication" in first


@pytest.mark.parametrize("host", ["localhost", "::1"])
def test_ui_on_other_loopback_names_does_not_warn(home: Path, host: str) -> None:
    execd = _exec_ui(home, "--host", host, "--port", str(free_port()))
    assert execd.option("--host") == host
    assert "warning" not in execd.stderr


def test_a_store_password_reaches_the_server_only_through_its_environment(home: Path) -> None:
    """Not on a command line, which every user of the machine can read in `ps`."""
    uri = "postgresql+psycopg://sweeps:s3cr/et@127.0.0.1:9/mlflow"
    execd = _exec_ui(home, "--port", str(free_port()), "--tracking-uri", uri)
    assert not any("s3cr" in arg for arg in execd.argv), execd.argv
    assert "s3cr" not in execd.stderr
    assert sa.make_url(execd.environ["MLFLOW_BACKEND_STORE_URI"]).password == "s3cr/et"


def test_ui_without_the_store_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "mlflow.db"  # its directory exists; the database does not
    result = invoke("ui", "--home", str(tmp_path), "--tracking-uri", f"sqlite:///{missing}")
    assert_usage_error(result, f"no MLflow store at {missing}", "sweeps run")


def test_ui_for_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    uri = f"http://sweeps:pa55@127.0.0.1:{free_port()}"
    result = invoke("ui", "--home", str(tmp_path), "--tracking-uri", uri)
    assert_usage_error(result, "is unreachable")
    assert "pa55" not in result.stderr

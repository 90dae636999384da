"""`sweeps ui` exposes nothing by default: what it really execs, and what it says.

The CLI runs in a subprocess and is stopped as soon as it has exec'd `mlflow server`
(same pid), so `/proc/<pid>/cmdline` and `/proc/<pid>/environ` show exactly the server
command line and environment, before the server gets to bind anything.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa

from sweeps.cli.ui_cmd import ui_args
from tests.services import free_port
from tests.sweeps.cli_helpers import assert_usage_error, invoke
from tests.sweeps.study_helpers import cli_env, run_cli, sweeps_cmd, wait_for


@dataclass(frozen=True)
class Served:
    argv: list[str]  # the `mlflow server` command line, interpreter first
    environ: dict[str, str]
    stderr: str  # what `sweeps ui` printed

    def option(self, name: str) -> str:
        return self.argv[self.argv.index(name) + 1]


def _proc_strings(pid: int, name: str) -> list[str]:
    return Path(f"/proc/{pid}/{name}").read_bytes().decode().split("\0")[:-1]


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _start_ui(home: Path, *args: str, timeout_s: float = 60) -> Served:
    """Run `sweeps ui ARGS` until it has started `mlflow server`, read that process's
    command line and environment, then stop `sweeps ui` (SIGTERM), which stops it."""
    proc = subprocess.Popen(
        sweeps_cmd("ui", *args),
        env=cli_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            servers = [c for c in _children(proc.pid) if "server" in _proc_strings(c, "cmdline")]
            if servers:
                argv = _proc_strings(servers[0], "cmdline")
                environ = dict(s.split("=", 1) for s in _proc_strings(servers[0], "environ"))
                server = servers[0]
                break
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, f"no mlflow server within {timeout_s}s"
            time.sleep(0.01)
    finally:
        proc.terminate()  # `sweeps ui` stops its server on SIGTERM
        _, stderr = proc.communicate(timeout=60)
    assert _gone(server), "sweeps ui left its server running"
    return Served(argv, environ, stderr)


def _gone(pid: int) -> bool:
    """No such process, or only its zombie."""
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "zombie" in status.read_text()


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    # `sweeps ui` only checks that the store exists; the server is killed before opening it
    (tmp_path / "mlflow.db").touch()
    yield tmp_path


def test_ui_args_bind_what_they_are_given() -> None:
    args = ui_args("127.0.0.1", 5000, None, None, "sweeps")
    assert args[1:] == [
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        "5000",
        "--workers",
        "1",
        "--app-name",
        "sweeps",
    ]
    assert Path(args[0]).name == "mlflow"
    assert "--app-name" not in ui_args("127.0.0.1", 5000, None, None)


def test_ui_serves_loopback_by_default_without_warning(home: Path) -> None:
    port = free_port()
    served = _start_ui(home, "--home", str(home), "--port", str(port))
    assert served.option("--host") == "127.0.0.1"
    assert served.option("--port") == str(port)
    assert "--backend-store-uri" not in served.argv
    assert served.environ["MLFLOW_BACKEND_STORE_URI"] == f"sqlite:///{home / 'mlflow.db'}"
    assert served.option("--default-artifact-root") == (home / "mlartifacts").as_uri()
    assert "--allowed-hosts" not in served.argv
    assert served.option("--app-name") == "sweeps"  # tracking/ui_app.py: the model-training view
    assert "warning" not in served.stderr
    assert served.stderr == ""  # nothing until the server answers (it was killed before)
    # the UI and server would otherwise try to phone home
    assert served.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    # nor start the job runner (GenAI jobs; ~10 processes, ~1 GB) a UI over runs does not use
    assert served.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_ui_on_another_interface_warns_and_passes_allowed_hosts(home: Path) -> None:
    served = _start_ui(
        home,
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
        "--allowed-hosts",
        "sweeps.example.org,sweeps.example.org:5000",
    )
    assert served.option("--host") == "0.0.0.0"
    assert served.option("--allowed-hosts") == "sweeps.example.org,sweeps.example.org:5000"
    first = served.stderr.splitlines()[0]
    assert first.startswith("sweeps: warning: binding 0.0.0.0 exposes the UI")
    assert "without authentication" in first


@pytest.mark.parametrize("host", ["localhost", "::1"])
def test_ui_on_other_loopback_names_does_not_warn(home: Path, host: str) -> None:
    served = _start_ui(home, "--host", host, "--port", str(free_port()))
    assert served.option("--host") == host
    assert "warning" not in served.stderr


def test_a_store_password_reaches_the_server_only_through_its_environment(
    home: Path, postgres_url: str
) -> None:
    """Not on a command line, which every user of the machine can read in `ps`."""
    # A fresh test database (trust authentication ignores the password).
    uri = sa.make_url(postgres_url).set(password="s3cr/et").render_as_string(hide_password=False)
    served = _start_ui(home, "--port", str(free_port()), "--tracking-uri", uri)
    assert not any("s3cr" in arg for arg in served.argv), served.argv
    assert "s3cr" not in served.stderr
    assert sa.make_url(served.environ["MLFLOW_BACKEND_STORE_URI"]).password == "s3cr/et"


def test_ui_without_the_store_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "mlflow.db"  # its directory exists; the database does not
    result = invoke("ui", "--home", str(tmp_path), "--tracking-uri", f"sqlite:///{missing}")
    assert_usage_error(result, f"no MLflow store at {missing}", "sweeps run")


class _Healthy(BaseHTTPRequestHandler):
    """Somebody else's server: answers every GET (MLflow's /health included) with 200."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port that another HTTP server listens on."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_ui_on_a_port_in_use_is_one_line_and_starts_no_server(home: Path, busy_port: int) -> None:
    result = invoke("ui", "--home", str(home), "--port", str(busy_port))
    assert_usage_error(result, f"port {busy_port} on 127.0.0.1 is already in use", "--port")
    assert "MLflow UI on" not in result.output
    assert not (home / "mlflow-ui.log").exists()  # no server was started


@pytest.mark.timeout(60)
@pytest.mark.parametrize("host", ["", " "])
def test_ui_on_an_empty_host_is_one_line_and_starts_no_server(home: Path, host: str) -> None:
    result = invoke("ui", "--home", str(home), "--host", host, "--port", str(free_port()))
    assert_usage_error(result, "--host is empty")
    assert "MLflow UI on" not in result.output
    assert not (home / "mlflow-ui.log").exists()  # no server was started


def test_ui_for_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    uri = f"http://sweeps:pa55@127.0.0.1:{free_port()}"
    result = invoke("ui", "--home", str(tmp_path), "--tracking-uri", uri)
    assert_usage_error(result, "is unreachable")
    assert "pa55" not in result.stderr


def _ui_of_a_study(home: Path, port: int) -> tuple[subprocess.Popen[str], str]:
    """`sweeps ui` on a one-trial study's home, once it has said where it serves (the
    line it said)."""
    args = ["run", "--study", "u", "--trials", "1", "--epochs", "2", "--quiet"]
    assert run_cli(*args, env=cli_env(home)).returncode == 0
    proc = subprocess.Popen(
        sweeps_cmd("ui", "--port", str(port)),
        env=cli_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    return proc, proc.stderr.readline()  # blocks until `sweeps ui` says it serves


@pytest.mark.slow
def test_the_url_is_printed_once_the_server_answers_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    proc, ready = _ui_of_a_study(home, port)
    try:
        assert ready.startswith(f"MLflow UI on http://127.0.0.1:{port}  (Ctrl-C to stop")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
            assert answer.status == 200  # answering when it said so, not ~25 s later
        server = _children(proc.pid)
        assert len(server) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    assert (
        not Path(f"/proc/{server[0]}").exists()
        or "zombie" in Path(f"/proc/{server[0]}/status").read_text()
    )
    assert "StarletteDeprecationWarning" in (home / "mlflow-ui.log").read_text()  # not ours


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies count as gone)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@pytest.mark.slow
def test_a_killed_ui_takes_its_server_with_it(tmp_path: Path) -> None:
    """SIGKILL leaves `sweeps ui` no chance to stop its server: the kernel does (the
    server dies with its parent), and nothing of the server's group is left running."""
    proc, ready = _ui_of_a_study(tmp_path / "home", free_port())
    try:
        assert ready.startswith("MLflow UI on http://"), ready
        [server] = _children(proc.pid)  # the leader of the server's own process group
        assert _group_alive(server)
    finally:
        proc.kill()
        proc.wait()
    wait_for("the MLflow server gone with `sweeps ui`", lambda: not _group_alive(server))

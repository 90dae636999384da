"""Real services for tests of the distributed path: an `mlflow server` process backed by its
own PostgreSQL database, a PostgreSQL role with a password, and a process reaper.

Registered as a pytest plugin by tests/conftest.py, so the fixtures `mlflow_server`,
`password_role` and `processes` are available to every test. Every process started here
is ended at teardown and every database or role created here is dropped, also when the
test fails half way.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import create_postgres_database, drop_postgres_database

# What the server gets on top of the test's environment. The job runner is a second
# process importing most of MLflow (~15 s of a 2-core machine at start-up) for features
# these tests never use; MLFLOW_WORKERS is the default for commands without --workers
# (MLflow's own default, 4 uvicorn processes, is too many for a CI machine).
SERVER_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_WORKERS": "1",
}
START_TIMEOUT_S = 120.0  # cold start under a loaded 2-core machine measured up to ~35 s
STOP_TIMEOUT_S = 15.0
PASSWORD = "S3cret-pw"  # a password the tests look for wherever it must not appear

Popen = subprocess.Popen[bytes]


def free_port() -> int:
    """A loopback port nobody listens on now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def mlflow_executable() -> str:
    """The `mlflow` entry point of the interpreter running the tests (the project venv)."""
    return str(Path(sys.executable).parent / "mlflow")


@dataclass
class MlflowServer:
    """One `mlflow server` command line that can be started, stopped and started again on
    the same port and database (a restart, as for chaos tests)."""

    args: list[str]
    port: int
    log: Path
    process: Popen | None = None
    starts: int = 0

    @classmethod
    def standard(cls, backend_uri: str, artifacts: Path, port: int, log: Path) -> MlflowServer:
        """The topology of docker/: PostgreSQL backend, artifacts served by the server."""
        args = [mlflow_executable(), "server", "--backend-store-uri", backend_uri]
        args += ["--serve-artifacts", "--artifacts-destination", str(artifacts)]
        args += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        return cls(args, port, log)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the server and wait until /health answers 200."""
        assert not self.running, "already running"
        env = {**os.environ, **SERVER_ENV}
        with self.log.open("ab") as log:
            # Its own process group: the command forks uvicorn, and stop() must end both.
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=log, env=env, start_new_session=True
            )
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"mlflow server exited: {self.tail()}")
            if self.healthy():
                return
            time.sleep(0.3)
        self.stop()
        raise AssertionError(f"mlflow server not healthy after {timeout_s:.0f} s: {self.tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM to the whole group (what `docker stop` does), SIGKILL if it lingers."""
        if self.process is None:
            return
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # The command may have exited before a forked child: reap the group in any case.
        _signal_group(self.process.pid, signal.SIGKILL)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):  # already gone
        os.killpg(pgid, sig)


@contextmanager
def mlflow_server_on_new_database(workdir: Path) -> Iterator[MlflowServer]:
    """A started standard server on a fresh PostgreSQL database, stopped and dropped after."""
    url, admin = create_postgres_database("sweeps_mlflow")
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "mlflow.log"
    server = MlflowServer.standard(url, workdir / "mlartifacts", free_port(), log)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        drop_postgres_database(url, admin)


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    """A real MLflow tracking server on a free loopback port (see MlflowServer)."""
    with mlflow_server_on_new_database(tmp_path / "mlflow-server") as server:
        yield server


@contextmanager
def role_with_password(
    database_urls: Sequence[str], name: str | None = None, password: str = PASSWORD
) -> Iterator[str]:
    """CREATE ROLE name LOGIN PASSWORD, owner-like rights on the public schema of each
    database; yields the role name and drops it (and what it owns) afterwards.

    The test server trusts local connections, so the password is not checked, but it is
    in every URL the product sees, which is what leak tests need.
    """
    role = name or f"sweeps_pw_{uuid.uuid4().hex[:8]}"
    engines = [sa.create_engine(url, isolation_level="AUTOCOMMIT") for url in database_urls]
    with engines[0].connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'"))
    try:
        for engine in engines:
            with engine.connect() as conn:
                conn.execute(sa.text(f'GRANT ALL ON SCHEMA public TO "{role}"'))
        yield role
    finally:
        for engine in engines:  # a role owning objects cannot be dropped
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
        with engines[0].connect() as conn:
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
        for engine in engines:
            engine.dispose()


@pytest.fixture
def password_role(postgres_url: str) -> Iterator[str]:
    """`postgres_url` as a role with the password PASSWORD: a URL carrying a secret."""
    with role_with_password([postgres_url]) as role:
        url = sa.make_url(postgres_url).set(username=role, password=PASSWORD)
        yield url.render_as_string(hide_password=False)


@dataclass
class Processes:
    """Processes a test starts (workers, launchers), all killed at teardown."""

    logs: Path
    started: list[Popen] = field(default_factory=list)

    def start(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> Popen:
        """Start `args` with stdout and stderr in LOGS/name.log (appended: restarts)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(list(args), stdout=log, stderr=log, env=dict(env))
        self.started.append(proc)
        return proc

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path / "logs")
    try:
        yield procs
    finally:
        procs.kill_all()


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb in a temporary directory, a free
    port), which the test can stop and start again: a real restart, which the shared
    server other tests use cannot have. Run as the `postgres` user when the tests run as
    root (initdb refuses root)."""

    directory: Path
    port: int = field(default_factory=free_port)
    settings: tuple[str, ...] = ()  # more server settings, e.g. ("max_connections=40",)

    @property
    def _as_owner(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _tool(self, name: str) -> str:
        found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
        if not found:
            pytest.fail(f"no PostgreSQL {name} under /usr/lib/postgresql/*/bin", pytrace=False)
        return str(found[-1])

    def init(self) -> None:
        if os.geteuid() == 0:
            import shutil

            shutil.chown(self.directory, "postgres")
        initdb = [self._tool("initdb"), "-D", str(self.directory / "data"), "-A", "trust"]
        subprocess.run(
            [*self._as_owner, *initdb, "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
        )

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        options += "".join(f" -c {setting}" for setting in self.settings)
        data = ["-D", str(self.directory / "data"), "-l", str(self.directory / "log")]
        subprocess.run(
            [*self._as_owner, self._tool("pg_ctl"), *data, "-o", options, "-w", *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        """A fast shutdown, as a service restart does: sessions ended, new ones refused."""
        self._ctl("-m", "fast", "stop")

    def create_database(self, name: str) -> str:
        """CREATE DATABASE; returns its URL."""
        admin = sa.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"


@contextmanager
def started_private_postgres(*settings: str) -> Iterator[PrivatePostgres]:
    """A started PrivatePostgres with these server `settings`, stopped and removed
    afterwards (under /tmp, which the `postgres` user can reach, unlike pytest's per-user
    temporary directory)."""
    import shutil
    import tempfile

    server = PrivatePostgres(Path(tempfile.mkdtemp(prefix="sweeps-pg-")), settings=settings)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started PrivatePostgres (`started_private_postgres`)."""
    with started_private_postgres() as server:
        yield server

"""A real `mlflow server` process on a free loopback port, backed by its own PostgreSQL
database, for tests of the distributed path (workers → tracking server)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import create_postgres_database, drop_postgres_database


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class MlflowServer:
    backend_uri: str
    artifacts: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90.0) -> None:
        mlflow = Path(sys.executable).parent / "mlflow"
        args = [str(mlflow), "server", "--backend-store-uri", self.backend_uri]
        args += ["--serve-artifacts", "--artifacts-destination", str(self.artifacts)]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
        with self.log.open("ab") as log:
            # its own process group, so stop() also ends the server's workers
            self.process = subprocess.Popen(
                args, stdout=log, stderr=log, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"mlflow server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"mlflow server not healthy: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    url, admin = create_postgres_database("sweeps_mlflow")
    server = MlflowServer(url, tmp_path / "mlartifacts", free_port(), tmp_path / "mlflow.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        drop_postgres_database(url, admin)

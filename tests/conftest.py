"""Shared fixtures: one torch thread, and a fresh PostgreSQL database per test.

PostgreSQL tests use the server named by SWEEPS_TEST_POSTGRES_URL, by default the local
one the README asks for. They never skip: with no server answering they fail, saying how
to start one or where to point the variable (`make test` is what CI runs).
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch

from sweeps.cli.process import quiet_mlflow, quiet_optuna

# The test process is an entry point of its own: it settles what the `sweeps` command
# settles for itself, since the library leaves the process alone.
torch.set_num_threads(1)  # tiny models run fastest on one thread
quiet_mlflow()  # before any test imports mlflow: no telemetry, no progress bars


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    """No log line or warning per trial from tests that call the library. Per test: pytest
    restores the warning filters after each one."""
    quiet_optuna()


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The MLflow store template (tracking.mlflow_store) is made once per test session in
    a directory of its own, for this process and the CLI processes it starts."""
    before = os.environ.get("SWEEPS_CACHE")
    os.environ["SWEEPS_CACHE"] = str(tmp_path_factory.mktemp("sweeps-cache"))
    yield
    if before is None:
        del os.environ["SWEEPS_CACHE"]
    else:
        os.environ["SWEEPS_CACHE"] = before


DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
START_POSTGRES = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


def server_url() -> str:
    """The test server's URL; fails the calling test with one line when none answers."""
    url, problem = _probe_server()
    if problem:
        pytest.fail(problem, pytrace=False)
    return url


@functools.cache
def _probe_server() -> tuple[str, str | None]:
    """Checked once per session: one quick connection, not one timeout per test."""
    url = os.environ.get("SWEEPS_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    engine = sa.create_engine(url, connect_args={"connect_timeout": 10})
    try:
        with engine.connect():
            return url, None
    except sa.exc.SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        shown = sa.make_url(url).render_as_string()  # password hidden
        return url, (
            f"no PostgreSQL server answers at {shown} ({reason}); start the local one with "
            f"`{START_POSTGRES}`, or point SWEEPS_TEST_POSTGRES_URL at another server"
        )
    finally:
        engine.dispose()


def create_postgres_database(prefix: str = "sweeps_test") -> tuple[str, sa.Engine]:
    """CREATE DATABASE on the test server; returns (url of the new db, admin engine)."""
    server = sa.make_url(server_url())
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as e:
        pytest.fail(f"PostgreSQL at {server.render_as_string()} is unreachable: {e}")
    return server.set(database=name).render_as_string(hide_password=False), admin


def drop_postgres_database(url: str, admin: sa.Engine) -> None:
    name = sa.make_url(url).database
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    url, admin = create_postgres_database()
    yield url
    drop_postgres_database(url, admin)


@pytest.fixture(params=["sqlite", "postgres"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One test, every storage backend (Optuna's `testing/storages.py` pattern)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sweeps.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


# The real-service fixtures (mlflow_server, password_role, processes) for every test.
pytest_plugins = ["tests.services"]

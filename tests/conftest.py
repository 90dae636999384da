"""Shared fixtures: one torch thread, a fresh PostgreSQL database per test, and the
test tiers (markers) derived from the fixtures a test uses.

PostgreSQL tests use the server named by SWEEPS_TEST_POSTGRES_URL, by default the local
one the README asks for. They never skip: with no server answering they fail, saying how
to start one or where to point the variable (`make test` is what CI runs).

Tiers (docs/development.md): a test is marked `postgres` when it uses a PostgreSQL fixture
or is parametrized with "postgres", `ui` when it drives the browser, `slow` when it starts
real services; `make test-fast` leaves the three out. A test that creates a PostgreSQL
database without being marked fails, so the markers cannot drift from what tests use.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Iterator
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


# Fixtures that give a test PostgreSQL, a browser, or a real service started for it
# (tests/services.py, tests/ui); a parametrization with the value "postgres" counts too.
POSTGRES_FIXTURES = frozenset(
    {"postgres_url", "postgres_database", "password_role", "mlflow_server", "private_postgres"}
)
UI_FIXTURES = frozenset({"browser", "page"})
SLOW_FIXTURES = frozenset({"mlflow_server", "private_postgres", "browser", "processes"})


def _tiers(item: pytest.Item) -> set[str]:
    used = set(getattr(item, "fixturenames", ()))
    callspec = getattr(item, "callspec", None)
    params = callspec.params.values() if callspec is not None else ()
    tiers = set()
    if used & POSTGRES_FIXTURES or any(value == "postgres" for value in params):
        tiers.add("postgres")
    if used & UI_FIXTURES:
        tiers.add("ui")
    if used & SLOW_FIXTURES:
        tiers.add("slow")
    return tiers


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for tier in sorted(_tiers(item)):
            item.add_marker(tier)


_running: list[pytest.Item] = []  # the test being set up, run or torn down


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.remove(item)


def _require_postgres_marker() -> None:
    """A test reaching PostgreSQL without the marker would run in `make test-fast`."""
    item = _running[-1] if _running else None
    if item is not None and item.get_closest_marker("postgres") is None:
        pytest.fail(
            f"{item.nodeid} uses PostgreSQL but is not marked `postgres`: take the database"
            " from a fixture of tests/conftest.py (postgres_url, postgres_database) or mark it",
            pytrace=False,
        )


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
    _require_postgres_marker()
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


@pytest.fixture
def postgres_database() -> Iterator[Callable[[str], str]]:
    """Makes fresh PostgreSQL databases (`postgres_database("prefix")` -> url), all dropped
    at teardown: for tests and fixtures that need more than one or a name prefix."""
    made: list[tuple[str, sa.Engine]] = []

    def make(prefix: str = "sweeps_test") -> str:
        made.append(create_postgres_database(prefix))
        return made[-1][0]

    yield make
    for url, admin in reversed(made):
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

"""The connection budget's parts on a real PostgreSQL server (`tracking.connections`): the
name each connection carries, one connection shared by Optuna's storage and the results
tables, the writer's turn between a process and its forked child, and a forked child's own
connections."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from sweeps.storage import open_storage
from tracking import connections
from tracking._mlflow_sql import store_engine
from tracking.results import ResultsStore

pytestmark = pytest.mark.postgres

_FORK = multiprocessing.get_context("fork")


def _held_by(pid: int, url: str) -> list[str]:
    """The application_name of every connection the process `pid` holds to `url`'s database,
    as the server names them (pg_stat_activity.application_name ends with the pid)."""
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT application_name FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalars()
            return [str(name) for name in rows if str(name).endswith(f" {pid}")]
    finally:
        admin.dispose()


def test_connections_say_whose_they_are(postgres_url: str) -> None:
    results = ResultsStore(postgres_url)
    try:
        with results.engine.connect() as conn:
            name = conn.execute(sa.text("SHOW application_name")).scalar_one()
    finally:
        results.dispose()
    assert re.fullmatch(rf"sweeps \S+ {os.getpid()}", name), name


def test_storage_and_results_share_one_connection(postgres_url: str) -> None:
    """Optuna's storage, the results tables and a second thread (a heartbeat's) take turns
    on one connection."""
    import optuna

    storage = open_storage(postgres_url)
    results = ResultsStore(postgres_url)
    results.share_engine(storage.engine)
    try:
        results.ensure_schema()
        study = optuna.create_study(study_name="one", storage=storage)
        beats = threading.Thread(target=lambda: [study.ask() for _ in range(20)])
        beats.start()
        for _ in range(20):
            results.studies()
            study.get_trials()
        beats.join()
        assert len(study.get_trials()) == 20
        assert len(_held_by(os.getpid(), postgres_url)) == 1
    finally:
        results.dispose()


def _in_child(target: Callable[[Any], None]) -> tuple[Any, Any]:
    """`target(pipe)` in a forked child (a recording process's way of starting); the
    parent's end of the pipe and the process."""
    ours, theirs = _FORK.Pipe()
    process = _FORK.Process(target=target, args=(theirs,), daemon=True)
    process.start()
    theirs.close()
    return ours, process


def test_a_forked_child_opens_connections_of_its_own(postgres_url: str) -> None:
    results = ResultsStore(postgres_url)

    def backend() -> int:
        with results.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())

    def child(pipe: Any) -> None:
        pipe.send(backend())

    try:
        mine = backend()  # pooled: the child inherits it
        pipe, process = _in_child(child)
        theirs = pipe.recv()
        process.join(30)
        assert theirs != mine
        assert backend() == mine  # the parent's connection outlived the child
    finally:
        results.dispose()


def _take_turn(pipe: Any) -> None:
    connections.become_writer()
    with connections.turn():
        pipe.send("taken")
        pipe.recv()  # until the parent says


def test_the_writers_turn_is_one_processs_at_a_time(postgres_url: str) -> None:
    """A worker that holds the turn (its MLflow connections open) keeps its recording
    process waiting, and closes those connections when it gives the turn back."""
    engine = store_engine(postgres_url)  # an MLflow store's engine: behind the turn
    pipe, process = None, None
    try:
        with connections.turn():
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            assert len(_held_by(os.getpid(), postgres_url)) == 1  # idle, still open
            pipe, process = _in_child(_take_turn)
            assert not pipe.poll(1.0)  # waits: the parent holds the turn
        assert _held_by(os.getpid(), postgres_url) == []
        assert pipe.poll(60) and pipe.recv() == "taken"
        pipe.send("done")
    finally:
        if process is not None:
            process.join(30)


def test_the_turn_comes_back_when_its_holder_dies() -> None:
    pipe, process = _in_child(_take_turn)
    assert pipe.poll(60) and pipe.recv() == "taken"
    os.kill(process.pid, signal.SIGKILL)
    process.join(30)
    with connections.turn():  # the kernel released the dead child's lock
        pass

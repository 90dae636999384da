"""Results-store schema: Alembic revisions, upgrades in place, Optuna's tables, concurrency."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.tracking.results_helpers import trial
from tracking.errors import TrackingError
from tracking.records import StudyRecord
from tracking.results import HEAD_REVISION, VERSION_TABLE, ResultsStore, upgrade
from tracking.results.models import Base

ROOT = Path(__file__).resolve().parents[2]
NEW_IN_0002 = {"penalty_value", "error"}
NEW_IN_0003 = {"train_accuracy", "val_accuracy", "test_accuracy"}
NEWER = {"0001": NEW_IN_0002 | NEW_IN_0003, "0002": NEW_IN_0003}


def version_rows(url: str, table: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(table):
                return []
            return list(conn.execute(sa.text(f"SELECT version_num FROM {table}")).scalars())
    finally:
        engine.dispose()


def trial_columns(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns("sweeps_trials")}
    finally:
        engine.dispose()


def test_schema_created_at_head_and_ensure_again_is_a_no_op(storage_url: str) -> None:
    first = ResultsStore(storage_url)
    first.ensure_schema()
    first.register_study(StudyRecord("demo", "d2l-synthetic", {}))
    first.record_trial(trial("demo", 0, value=0.5))
    first.dispose()
    assert version_rows(storage_url, VERSION_TABLE) == [HEAD_REVISION]
    assert NEW_IN_0002 | NEW_IN_0003 | {"lambda", "value", "params"} <= trial_columns(storage_url)

    again = ResultsStore(storage_url)
    again.ensure_schema()
    again.ensure_schema()
    assert [r["value"] for r in again.trials("demo")] == [0.5]
    again.dispose()
    assert version_rows(storage_url, VERSION_TABLE) == [HEAD_REVISION]


def test_up_to_date_store_never_imports_alembic_or_heavy_packages(storage_url: str) -> None:
    upgrade(storage_url)
    script = (
        "import sys\n"
        "from tracking.results import ResultsStore\n"
        f"store = ResultsStore({storage_url!r})\n"
        "store.ensure_schema(); store.studies()\n"
        "print([m for m in ('alembic', 'torch', 'mlflow', 'optuna') if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def only_ours(name: str | None, type_: str, parent_names: object) -> bool:
    return type_ != "table" or (name or "").startswith("sweeps_")


def test_models_match_the_migrations(storage_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(ROOT / "tracking/results/migrations"))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION

    upgrade(storage_url)
    engine = sa.create_engine(storage_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE, "include_name": only_ours}
            )
            assert compare_metadata(context, Base.metadata) == []
            columns = {c["name"]: c["type"] for c in sa.inspect(conn).get_columns("sweeps_trials")}
    finally:
        engine.dispose()
    if storage_url.startswith("postgresql"):
        assert isinstance(columns["lambda"], sa.DOUBLE_PRECISION)  # 64-bit, not REAL


@pytest.mark.parametrize("optuna_first", [True, False])
def test_coexists_with_optuna_storage(storage_url: str, optuna_first: bool) -> None:
    import optuna

    def open_optuna() -> list[str]:
        storage = optuna.storages.RDBStorage(storage_url)
        optuna.create_study(storage=storage, study_name=f"o-{optuna_first}", load_if_exists=True)
        storage.engine.dispose()
        return version_rows(storage_url, "alembic_version")

    optuna_version = open_optuna() if optuna_first else []
    store = ResultsStore(storage_url)
    store.ensure_schema()
    store.register_study(StudyRecord("demo", "d2l-synthetic", {}))
    store.dispose()
    if optuna_first:
        assert version_rows(storage_url, "alembic_version") == optuna_version
    else:
        assert version_rows(storage_url, "alembic_version") == []  # ours never writes there
        optuna_version = open_optuna()
    assert len(optuna_version) == 1 and optuna_version != [HEAD_REVISION]
    assert open_optuna() == optuna_version  # Optuna still accepts its schema
    assert version_rows(storage_url, VERSION_TABLE) == [HEAD_REVISION]
    tables = set(sa.inspect(sa.create_engine(storage_url)).get_table_names())
    assert {"studies", "trials", "alembic_version", "sweeps_studies", "sweeps_trials"} <= tables


INSERT_0001_STUDY = (
    "INSERT INTO sweeps_studies (name, task, config, created_at) "
    "VALUES (:name, 'd2l-synthetic', :config, :created)"
)
INSERT_0001_TRIAL = (
    "INSERT INTO sweeps_trials (study_id, number, state, penalty, lambda, device, value, "
    "duration_s, params, created_at) SELECT id, :number, 'COMPLETE', 'l1', :lam, 'cpu', "
    ":value, 2.5, '{}', :created FROM sweeps_studies WHERE name = :name"
)


@pytest.mark.parametrize(
    ("old", "first_call"), [("0001", "ensure_schema"), ("0001", "query"), ("0002", "query")]
)
def test_a_schema_at_an_earlier_revision_is_upgraded_in_place(
    storage_url: str, old: str, first_call: str
) -> None:
    upgrade(storage_url, old)
    assert version_rows(storage_url, VERSION_TABLE) == [old]
    assert not NEWER[old] & trial_columns(storage_url)
    created = sa.bindparam("created", type_=sa.DateTime(timezone=True))
    engine = sa.create_engine(storage_url)
    with engine.begin() as conn:
        now = datetime.now(UTC)
        study = {"name": "old", "config": json.dumps({"a": 1}), "created": now}
        conn.execute(sa.text(INSERT_0001_STUDY).bindparams(created), study)
        for number, value in [(0, 0.75), (1, 1 / 3)]:
            row = {
                "name": "old",
                "number": number,
                "lam": value * 2,
                "value": value,
                "created": now,
            }
            conn.execute(sa.text(INSERT_0001_TRIAL).bindparams(created), row)
    engine.dispose()

    store = ResultsStore(storage_url)
    if first_call == "ensure_schema":
        store.ensure_schema()
    rows = store.trials("old")
    assert [(r["number"], r["lambda"], r["value"]) for r in rows] == [
        (0, 1.5, 0.75),
        (1, 2 / 3, 1 / 3),
    ]
    assert all(r[name] is None for r in rows for name in NEWER["0001"])
    assert store.get_study("old").config == {"a": 1}
    assert store.record_trial(trial("old", 2, value=0.1)) is True
    store.dispose()
    assert version_rows(storage_url, VERSION_TABLE) == [HEAD_REVISION]
    assert trial_columns(storage_url) >= NEWER[old]


def test_unknown_revision_is_refused(storage_url: str) -> None:
    upgrade(storage_url)
    engine = sa.create_engine(storage_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    store = ResultsStore(storage_url)
    with pytest.raises(TrackingError, match="revision '9999'"):
        store.ensure_schema()
    store.dispose()


WORKERS = 4
TRIALS_PER_WORKER = 8
SHARED_NUMBER = 1000  # every worker tries to write this one; exactly one may


Report = tuple[int, int, bool, str, bool]  # worker, stored config's worker, won, parent, wrote


def _worker(url: str, worker: int, start: Barrier, report: Queue[Report]) -> None:
    store = ResultsStore(url)
    start.wait()  # all four hit the fresh database at once
    store.ensure_schema()
    registered = store.register_study(StudyRecord("race", "d2l-synthetic", {"worker": worker}))
    mine = f"parent-{worker}"
    won = store.attach_parent("race", "1", None, lambda: mine) == mine
    for i in range(TRIALS_PER_WORKER):
        number = worker * TRIALS_PER_WORKER + i
        assert store.record_trial(trial("race", number, value=number / 10)) is True
    wrote_shared = store.record_trial(trial("race", SHARED_NUMBER, value=0.0))
    parent = store.get_study("race").mlflow_parent_run_id or ""
    store.dispose()
    report.put((worker, registered.config["worker"], won, parent, wrote_shared))


@pytest.mark.slow
def test_concurrent_processes(storage_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(WORKERS)
    report: Queue[Report] = context.Queue()
    processes = [
        context.Process(target=_worker, args=(storage_url, w, start, report))
        for w in range(WORKERS)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)  # the reports are tiny: they never block a worker's exit
    assert [p.exitcode for p in processes] == [0] * WORKERS  # a failing worker prints why
    results = [report.get(timeout=10) for _ in range(WORKERS)]
    assert len({first for _, first, _, _, _ in results}) == 1  # one registration won
    winners = [worker for worker, _, won, _, _ in results if won]
    assert len(winners) == 1  # exactly one parent run attached ...
    assert {parent for *_, parent, _ in results} == {f"parent-{winners[0]}"}  # ... seen by all
    assert sorted(wrote for *_, wrote in results) == [False] * (WORKERS - 1) + [True]

    store = ResultsStore(storage_url)
    numbers = store.trial_numbers("race")
    store.dispose()
    expected = set(range(WORKERS * TRIALS_PER_WORKER)) | {SHARED_NUMBER}
    assert set(numbers) == expected and set(numbers.values()) == {"COMPLETE"}
    assert version_rows(storage_url, VERSION_TABLE) == [HEAD_REVISION]

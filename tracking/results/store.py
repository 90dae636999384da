"""The results store: one typed row per study and per finished trial, queried with plain SQL."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tracking.db import insert_rows
from tracking.errors import TrackingError, UnknownStudyError
from tracking.reconnect import retrying
from tracking.records import (
    BEST_COLUMNS,
    COUNT_COLUMNS,
    FINAL_METRICS,
    StudyRecord,
    TrialRecord,
    TrialState,
)
from tracking.results import confirmations
from tracking.results.engine import database_errors, make_engine
from tracking.results.migrate import current_revision, upgrade_engine
from tracking.results.models import HEAD_REVISION, StudyRow, TrialRow, utc_now
from tracking.results.queries import (
    TRIAL_SELECT,
    best_rows,
    find_study,
    find_study_id,
    penalty_counts,
    summary_query,
    trial_exists,
)

_P = ParamSpec("_P")
# What `record_guarded` asks before writing: the records to write, decided on the
# transaction's connection.
Guard = Callable[[sa.Connection, list[TrialRecord]], list[TrialRecord]]
_R = TypeVar("_R")


def _database_errors(
    method: Callable[Concatenate[ResultsStore, _P], _R],
) -> Callable[Concatenate[ResultsStore, _P], _R]:
    @functools.wraps(method)
    def wrapper(self: ResultsStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        # Each method may run twice (its writes write once): a dropped connection reruns it.
        with database_errors(self.engine):
            return retrying(lambda: method(self, *args, **kwargs), self.engine.url)

    return wrapper


class ResultsStore:
    """Typed results tables in a SQL database, by default Optuna's own storage database.

    Writes create or upgrade the schema first; queries on a database without the tables see
    an empty store and never create them.

    Args:
        url: A SQLAlchemy database URL. The engine is built now; the database is not touched
            until the first call.

    Raises:
        TrackingError: The URL is malformed (see `make_engine`).
    """

    def __init__(self, url: str) -> None:
        self._engine = make_engine(url)
        self._schema_ready = False

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine, for callers that run their own SQL."""
        return self._engine

    def share_engine(self, engine: sa.Engine) -> None:
        """Use `engine`, another engine on the same PostgreSQL database (Optuna's storage's):
        one pool, one connection for both (`tracking.connections`). The store's own engine
        is closed. SQLite keeps its own engine, whose transactions are set up for it."""
        if engine is self._engine or engine.url.get_backend_name() != "postgresql":
            return
        if engine.url.render_as_string(False) != self._engine.url.render_as_string(False):
            raise ValueError("a shared engine must be on the results store's own database")
        self._engine.dispose()
        self._engine = engine

    @_database_errors
    def ensure_schema(self) -> None:
        """Create or upgrade the results tables to the newest revision.

        Safe when several processes call it at once; one query when already up to date.
        """
        if self._schema_ready:
            return
        with self._engine.connect() as conn:
            found = current_revision(conn)
        if found != HEAD_REVISION:
            upgrade_engine(self._engine)
        self._schema_ready = True

    @_database_errors
    def register_study(self, rec: StudyRecord) -> StudyRecord:
        """Insert the study unless one of that name exists; return the stored record.

        The first writer wins, also against a concurrent process: a later caller gets the
        stored record unchanged (its MLflow parent run included), not its own.
        """
        if not 0 < len(rec.name) <= 512:
            raise TrackingError(f"a study name has 1 to 512 characters, got {len(rec.name)}")
        self.ensure_schema()
        with Session(self._engine) as session:
            if find_study(session, rec.name) is None:
                session.add(_study_row(rec))
                try:
                    session.commit()
                except IntegrityError:
                    session.rollback()  # a concurrent process registered it first
                    if find_study(session, rec.name) is None:
                        raise
        return self.get_study(rec.name)

    @_database_errors
    def forget_study(self, name: str) -> bool:
        """Delete the study `name` unless it has trial rows (a registration that was refused
        before any trial ran); returns whether it was deleted."""
        if not self._has_schema():
            return False
        has_trials = sa.exists().where(TrialRow.study_id == StudyRow.id)
        with Session(self._engine) as session:
            deleted = session.execute(sa.delete(StudyRow).where(StudyRow.name == name, ~has_trials))
            session.commit()
        return bool(getattr(deleted, "rowcount", 0))

    @_database_errors
    def set_study_mlflow(self, name: str, experiment_id: str, parent_run_id: str) -> None:
        """Store the study's MLflow experiment and parent run ids over whatever is stored
        (repair: they moved). A first parent run is attached with `attach_parent`.

        Raises:
            UnknownStudyError: No study of that name.
        """
        self.ensure_schema()
        update = (
            sa.update(StudyRow)
            .where(StudyRow.name == name)
            .values(mlflow_experiment_id=experiment_id, mlflow_parent_run_id=parent_run_id)
        )
        with self._engine.begin() as conn:
            if conn.execute(update).rowcount != 1:
                raise UnknownStudyError(f"no study named '{name}'")

    def attach_parent(
        self, name: str, experiment_id: str, seen: str | None, create: Callable[[], str]
    ) -> str:
        """The study's parent run: the one another process attached since the caller saw
        `seen` stored, else `create()`'s, attached. One at a time: the study's row stays
        locked from the read to the write, so processes starting together make one parent
        run, not one each (SQLite's write lock, taken at the start, does the same).

        Not rerun on a dropped connection (a rerun would create a second parent run): the
        error is raised, and the caller's next start attaches one.

        Raises:
            UnknownStudyError: No study of that name.
        """
        self.ensure_schema()
        stored_parent = StudyRow.mlflow_parent_run_id
        read = sa.select(stored_parent).where(StudyRow.name == name).with_for_update()
        with database_errors(self.engine), self._engine.begin() as conn:
            row = conn.execute(read).first()
            if row is None:
                raise UnknownStudyError(f"no study named '{name}'")
            if row[0] != seen:
                return str(row[0])
            run_id = create()
            conn.execute(
                sa.update(StudyRow)
                .where(StudyRow.name == name)
                .values(mlflow_experiment_id=experiment_id, mlflow_parent_run_id=run_id)
            )
            return run_id

    @_database_errors
    def reused_count(self, study: str) -> int:
        """How many of the study's trials took an earlier trial's result (0 if none yet)."""
        if not self._has_schema():
            return 0
        with Session(self._engine) as session:
            query = (
                sa.select(sa.func.count())
                .select_from(TrialRow)
                .join(StudyRow, StudyRow.id == TrialRow.study_id)
                .where(StudyRow.name == study, TrialRow.reused_from.is_not(None))
            )
            return int(session.execute(query).scalar_one())

    @_database_errors
    def exists(self) -> bool:
        """Whether the results tables exist, found without writing anything: an SQLite
        file that does not exist, or is empty, is not opened (opening one would write)."""
        url = self._engine.url
        if url.get_backend_name() == "sqlite":
            path = Path(url.database or "")
            if not path.is_file() or path.stat().st_size == 0:
                return False
        with self._engine.connect() as conn:
            return current_revision(conn) is not None

    @_database_errors
    def find_study_uid(self, name: str) -> str | None:
        """`study_uid`, or None where the study (or the schema) does not exist yet; nothing
        is written by asking (see `exists`)."""
        if not self.exists() or not self._has_schema():
            return None
        try:
            return self.study_uid(name)
        except UnknownStudyError:
            return None

    @_database_errors
    def study_uid(self, name: str) -> str:
        """The study's identity across stores: its row here, created once per storage
        (the same study reached through another URL has the same one; a study of the same
        name in another storage has another).

        Raises:
            UnknownStudyError: No study of that name.
        """
        with Session(self._engine) as session:
            row = session.execute(
                sa.select(StudyRow.id, StudyRow.created_at).where(StudyRow.name == name)
            ).first()
        if row is None:
            raise UnknownStudyError(f"no study named '{name}'")
        created = row[1].astimezone(UTC).isoformat()
        return hashlib.sha256(f"{row[0]}|{created}".encode()).hexdigest()[:32]

    @_database_errors
    def get_study(self, name: str) -> StudyRecord:
        """The stored study.

        Raises:
            UnknownStudyError: No study of that name.
        """
        row = None
        if self._has_schema():
            with Session(self._engine) as session:
                row = find_study(session, name)
        if row is None:
            raise UnknownStudyError(f"no study named '{name}'")
        return StudyRecord(
            name=row.name,
            task=row.task,
            config=json.loads(row.config),
            mlflow_experiment_id=row.mlflow_experiment_id,
            mlflow_parent_run_id=row.mlflow_parent_run_id,
        )

    @_database_errors
    def record_trial(self, rec: TrialRecord, *, replace: bool = False) -> bool:
        """Write the row of trial (rec.study, rec.number) once.

        Args:
            rec: The finished trial; its study must be registered.
            replace: Overwrite an existing row (repair) instead of leaving it alone.

        Returns:
            True when a row was written; False when it existed and `replace` is False.

        Raises:
            UnknownStudyError: The study is not registered.
        """
        self.ensure_schema()
        values = _trial_values(rec)
        with Session(self._engine) as session:
            study_id = find_study_id(session, rec.study)
            session.add(
                TrialRow(study_id=study_id, number=rec.number, created_at=utc_now(), **values)
            )
            try:
                session.commit()
                return True
            except IntegrityError:
                session.rollback()  # the row exists, perhaps written by another process
                if not trial_exists(session, study_id, rec.number):
                    raise
            if not replace:
                return False
            session.execute(
                sa.update(TrialRow)
                .where(TrialRow.study_id == study_id, TrialRow.number == rec.number)
                .values(**values)
            )
            session.commit()
            return True

    @_database_errors
    def record_trials(self, recs: Sequence[TrialRecord]) -> list[bool]:
        """Write the rows of many finished trials (a `--batch` round), each once, in one
        transaction: what `record_trial` does for each, without replacing.

        Returns, per record, whether its row was written (False: it existed already).
        """
        if not recs:
            return []
        self.ensure_schema()
        with Session(self._engine) as session:
            ids = {name: find_study_id(session, name) for name in {rec.study for rec in recs}}
            keys = [(ids[rec.study], rec.number) for rec in recs]
            existing = self._existing(session, keys)
            written = [key not in existing for key in keys]
            now = utc_now()
            rows = [
                (key[0], key[1], now, *_trial_values(rec).values())
                for key, rec, new in zip(keys, recs, written, strict=True)
                if new
            ]
            try:  # below the ORM: one executemany of plain tuples
                insert_rows(session.connection(), _TRIALS, _TRIAL_COLUMNS, rows, convert=True)
                session.commit()
            except IntegrityError:  # another process wrote one meanwhile: one by one
                session.rollback()
                return [self.record_trial(rec) for rec in recs]
        return written

    @_database_errors
    def record_guarded(
        self, recs: Sequence[TrialRecord], guard: Guard, *, replace: bool = False
    ) -> list[TrialRecord]:
        """Write the rows of the trials `guard` lets through, in one transaction that
        `guard` runs in first: it may lock rows and act while they are locked (the fence
        around a worker's writes, `sweeps.fencing`).

        Args:
            recs: Finished trials of registered studies.
            guard: Given the transaction's connection and `recs`, returns the records to
                write (possibly changed).
            replace: Overwrite existing rows (healing) instead of leaving them alone.

        Returns:
            The records `guard` let through.
        """
        if not recs:
            return []
        self.ensure_schema()
        with Session(self._engine) as session, session.begin():
            kept = guard(session.connection(), list(recs))
            ids = {name: find_study_id(session, name) for name in {rec.study for rec in kept}}
            keys = [(ids[rec.study], rec.number) for rec in kept]
            existing = self._existing(session, keys)
            now = utc_now()
            rows = [
                (key[0], key[1], now, *_trial_values(rec).values())
                for key, rec in zip(keys, kept, strict=True)
                if key not in existing
            ]
            insert_rows(session.connection(), _TRIALS, _TRIAL_COLUMNS, rows, convert=True)
            for key, rec in zip(keys, kept, strict=True):
                if replace and key in existing:
                    session.execute(
                        sa.update(TrialRow)
                        .where(TrialRow.study_id == key[0], TrialRow.number == key[1])
                        .values(**_trial_values(rec))
                    )
        return kept

    @staticmethod
    def run_ids_on(conn: sa.Connection, study: str, numbers: Sequence[int]) -> dict[int, str]:
        """The MLflow run id of each of `study`'s rows among `numbers` that names one, read
        on `conn` (inside a `record_guarded` guard)."""
        query = (
            sa.select(TrialRow.number, TrialRow.mlflow_run_id)
            .join(StudyRow, StudyRow.id == TrialRow.study_id)
            .where(StudyRow.name == study, TrialRow.number.in_(list(numbers)))
        )
        return {int(n): str(run_id) for n, run_id in conn.execute(query) if run_id is not None}

    @staticmethod
    def _existing(session: Session, keys: list[tuple[int, int]]) -> set[tuple[int, int]]:
        if not keys:
            return set()
        query = sa.select(TrialRow.study_id, TrialRow.number).where(
            sa.tuple_(TrialRow.study_id, TrialRow.number).in_(keys)
        )
        return {(row[0], row[1]) for row in session.execute(query)}

    @_database_errors
    def studies(self) -> list[dict[str, Any]]:
        """One summary per study, ordered by name: counts per state and the best value."""
        if not self._has_schema():
            return []
        with Session(self._engine) as session:
            rows = session.execute(summary_query()).all()
        summaries = [
            {
                "study": row.StudyRow.name,
                "task": row.StudyRow.task,
                "created": row.StudyRow.created_at.isoformat(),
                "trials": int(row.trials or 0),
                "complete": int(row.complete or 0),
                "pruned": int(row.pruned or 0),
                "failed": int(row.failed or 0),
                "best_value": row.best_value,
                "mlflow_experiment_id": row.StudyRow.mlflow_experiment_id,
            }
            for row in rows
        ]
        # Sorted here, not in SQL: PostgreSQL's locale collation would order differently.
        return sorted(summaries, key=lambda s: str(s["study"]))

    @_database_errors
    def trials(self, study: str) -> list[dict[str, Any]]:
        """Every trial row of the study, ordered by number.

        Raises:
            UnknownStudyError: No study of that name.
        """
        with Session(self._engine) as session:
            study_id = self._readable_study_id(session, study)
            query = (
                sa.select(*TRIAL_SELECT)
                .where(TrialRow.study_id == study_id)
                .order_by(TrialRow.number)
            )
            return [dict(row._mapping) for row in session.execute(query)]

    @_database_errors
    def best(
        self, study: str, penalty: str | None = None, *, every_penalty: bool = False
    ) -> list[dict[str, Any]]:
        """The best COMPLETE trial per penalty (lowest value, ties to the lowest number).

        Args:
            study: The study name.
            penalty: Only this penalty; an empty list when it has no complete trial.
            every_penalty: Also a row for each penalty of the study (its stored config's
                `penalties`, and any penalty its trials have) without a complete trial,
                its best fields None, after the others in the config's order; and on
                every row its trials per COUNT_COLUMNS.

        Returns:
            One row per penalty, ordered by value.

        Raises:
            UnknownStudyError: No study of that name.
        """
        with Session(self._engine) as session:
            study_id = self._readable_study_id(session, study)
            rows = best_rows(session, [study_id], penalty)
            if every_penalty:
                rows = self._every_penalty(session, [study], [study_id], rows, penalty)
            return rows

    @_database_errors
    def compare(
        self, studies: Sequence[str] | None = None, *, every_penalty: bool = False
    ) -> list[dict[str, Any]]:
        """`best` rows of every study (or of those named, in that order), study by study
        (`every_penalty`: as `best` has it).

        Raises:
            UnknownStudyError: A named study does not exist.
        """
        if studies is None:
            names = [s["study"] for s in self.studies()]
        else:
            names = list(dict.fromkeys(studies))  # drop repeats, keep the order given
        if not names:
            return []  # nothing to compare (a storage without studies has no tables to read)
        with Session(self._engine) as session:
            ids = [self._readable_study_id(session, name) for name in names]
            rows = best_rows(session, ids, None)
            if every_penalty:
                rows = self._every_penalty(session, names, ids, rows, None)
        by_study: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for row in rows:
            by_study[row["study"]].append(row)
        return [row for name in names for row in by_study[name]]

    @staticmethod
    def _every_penalty(
        session: Session,
        names: Sequence[str],
        ids: Sequence[int],
        rows: list[dict[str, Any]],
        penalty: str | None,
    ) -> list[dict[str, Any]]:
        """`rows` with their counts, and a row of counts for each penalty without one."""
        counts = penalty_counts(session, ids)
        query = sa.select(StudyRow.id, StudyRow.config).where(StudyRow.id.in_(ids))
        configs = {int(study_id): str(config) for study_id, config in session.execute(query)}
        zero = dict.fromkeys(COUNT_COLUMNS, 0)
        out = []
        for name, study_id in zip(names, ids, strict=True):
            stored = json.loads(configs.get(study_id) or "{}").get("penalties") or []
            seen = [p for sid, p in counts if sid == study_id]
            penalties = list(dict.fromkeys([*stored, *sorted(seen)]))
            if penalty is not None:
                penalties = [p for p in penalties if p == penalty]
            best = {row["penalty"]: row for row in rows if row["study"] == name}
            for p in [*best, *(p for p in penalties if p not in best)]:
                row = best.get(p) or {**dict.fromkeys(BEST_COLUMNS), "study": name, "penalty": p}
                out.append({**row, **counts.get((study_id, p), zero)})
        return out

    @_database_errors
    def trial_numbers(self, study: str) -> dict[int, str]:
        """Trial number → state of every row of the study, for consistency checks.

        Raises:
            UnknownStudyError: No study of that name.
        """
        with Session(self._engine) as session:
            study_id = self._readable_study_id(session, study)
            query = sa.select(TrialRow.number, TrialRow.state).where(TrialRow.study_id == study_id)
            return {number: state for number, state in session.execute(query).all()}

    @_database_errors
    def record_confirmations(self, recs: Sequence[TrialRecord]) -> list[bool]:
        """Write the rows of confirmation runs (`tracking.results.confirmations`), each once
        per (study, candidate, seed, data seed), in one transaction; per record, whether its
        row was written (False: it existed already).
        """
        if not recs:
            return []
        self.ensure_schema()
        with Session(self._engine) as session:
            written = confirmations.write(session, recs)
            session.commit()
        return written

    @_database_errors
    def confirmations(self, study: str) -> list[dict[str, Any]]:
        """Every confirmation row of the study (`confirmations.CONFIRMATION_COLUMNS`).

        Raises:
            UnknownStudyError: No study of that name.
        """
        with Session(self._engine) as session:
            self._readable_study_id(session, study)
            return confirmations.read(session, study)

    @contextmanager
    def study_lock(self, study: str, purpose: str) -> Iterator[None]:
        """Hold, for the block, a lock of this database that another process's
        `study_lock(study, purpose)` waits for: what one process reads and then writes
        elsewhere (MLflow) is not read by another in between. On PostgreSQL an advisory
        lock (it blocks no table), on SQLite the database's write lock, which every
        transaction then waits for: the block must not use this store. Other databases:
        no lock.

        Raises:
            TrackingError: The database cannot be reached.
        """
        with contextlib.ExitStack() as held:
            with database_errors(self._engine):
                conn = held.enter_context(self._engine.connect())
                if conn.dialect.name == "postgresql":
                    key = _lock_key(f"{purpose}\0{study}")
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
                elif conn.dialect.name == "sqlite":  # its BEGIN IMMEDIATE (`tracking.db`)
                    conn.execute(sa.text("SELECT 1"))  # takes the write lock
            yield
            conn.rollback()  # the lock goes with the transaction

    @_database_errors
    def confirmation_records(self, study: str) -> list[TrialRecord]:
        """Every confirmation row of the study as its record (`confirmations.records`).

        Raises:
            UnknownStudyError: No study of that name.
        """
        with Session(self._engine) as session:
            self._readable_study_id(session, study)
            return confirmations.records(session, study)

    @_database_errors
    def set_confirmation_run(self, study: str, key: tuple[int, int, int], run_id: str) -> None:
        """Point a confirmation row, (candidate, seed, data seed), at its MLflow run."""
        with Session(self._engine) as session:
            confirmations.set_run(session, study, key, run_id)
            session.commit()

    def dispose(self) -> None:
        """Close the engine's pooled connections."""
        self._engine.dispose()

    def _has_schema(self) -> bool:
        """Whether the tables exist; an older schema is upgraded in place before it is read."""
        if self._schema_ready:
            return True
        with self._engine.connect() as conn:
            found = current_revision(conn)
        if found is None:
            return False
        self.ensure_schema()
        return True

    def _readable_study_id(self, session: Session, name: str) -> int:
        if not self._has_schema():
            raise UnknownStudyError(f"no study named '{name}'")
        return find_study_id(session, name)


def _study_row(rec: StudyRecord) -> StudyRow:
    return StudyRow(
        name=rec.name,
        task=rec.task,
        config=json.dumps(rec.config, sort_keys=True),
        created_at=utc_now(),
        mlflow_experiment_id=rec.mlflow_experiment_id,
        mlflow_parent_run_id=rec.mlflow_parent_run_id,
    )


# The columns `record_trials` writes, in order: the key, then `_trial_values`' (by column
# name: the model's attribute `lambda_` is the column `lambda`).
_TRIALS: sa.Table = TrialRow.__table__  # type: ignore[assignment]
_TRIAL_COLUMNS = (
    "study_id",
    "number",
    "created_at",
    "state",
    "penalty",
    "lambda",
    "l1_ratio",
    "lr",
    "epochs",
    "seed",
    "device",
    *FINAL_METRICS,
    "value",
    "duration_s",
    "mlflow_run_id",
    "error",
    "reused_from",
    "params",
)


def _trial_values(rec: TrialRecord) -> dict[str, Any]:
    """The columns of a trial row, keyed by model attribute (all but study, number, created)."""
    params = rec.params
    return {
        "state": TrialState(rec.state).value,
        "penalty": rec.penalty,
        "lambda_": _float_or_none(params.get("lambda")),
        "l1_ratio": _float_or_none(params.get("l1_ratio")),
        "lr": _float_or_none(params.get("lr")),
        "epochs": _int_or_none(params.get("epochs")),
        "seed": _int_or_none(params.get("seed")),
        "device": rec.device,
        **{name: _float_or_none(rec.final.get(name)) for name in FINAL_METRICS},
        "value": _float_or_none(rec.value),
        "duration_s": float(rec.duration_s),
        "mlflow_run_id": rec.mlflow_run_id,
        "error": rec.error,
        "reused_from": rec.reused_from,
        "params": json.dumps(params, sort_keys=True),
    }


def _lock_key(name: str) -> int:
    """A signed 64-bit advisory lock key for `name`."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)

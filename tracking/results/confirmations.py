"""The confirmation rows of the results store (`sweeps confirm`): written once per
(study, candidate, seed, data seed), read back for the statistics and `sweeps check`.

A confirmation is handed over as a `TrialRecord` whose `number` is the candidate trial's
and whose `params` hold the seed and data seed it was trained with.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracking.records import FINAL_METRICS, TrialRecord, TrialState
from tracking.results.models import ConfirmationRow, utc_now
from tracking.results.queries import find_study_id

# What a confirmation row reads back as, in this order (`sweeps confirm`'s confirm.csv).
CONFIRMATION_COLUMNS = (
    "candidate",
    "seed",
    "data_seed",
    "state",
    "penalty",
    "lambda",
    "l1_ratio",
    *FINAL_METRICS,
    "duration_s",
    "device",
    "mlflow_run_id",
    "error",
)
Key = tuple[int, int, int]  # candidate, seed, data seed


def key_of(rec: TrialRecord) -> Key:
    return rec.number, int(rec.params["seed"]), int(rec.params["data_seed"])


def write(session: Session, recs: Sequence[TrialRecord]) -> list[bool]:
    """Insert the rows not there yet (committed by the caller); per record, whether its
    row was written."""
    ids = {name: find_study_id(session, name) for name in {rec.study for rec in recs}}
    have = _existing(session, set(ids.values()))
    written = []
    for rec in recs:
        study_id = ids[rec.study]
        new = (study_id, *key_of(rec)) not in have
        written.append(new)
        if new:
            have.add((study_id, *key_of(rec)))
            session.add(_row(study_id, rec))
    return written


def _existing(session: Session, study_ids: set[int]) -> set[tuple[int, int, int, int]]:
    c = ConfirmationRow
    query = sa.select(c.study_id, c.candidate, c.seed, c.data_seed).where(c.study_id.in_(study_ids))
    return {(a, b, s, d) for a, b, s, d in session.execute(query).all()}


def _row(study_id: int, rec: TrialRecord) -> ConfirmationRow:
    candidate, seed, data_seed = key_of(rec)
    params = rec.params
    return ConfirmationRow(
        study_id=study_id,
        candidate=candidate,
        seed=seed,
        data_seed=data_seed,
        state=TrialState(rec.state).value,
        penalty=rec.penalty,
        lambda_=_float(params.get("lambda")),
        l1_ratio=_float(params.get("l1_ratio")),
        **{name: _float(rec.final.get(name)) for name in FINAL_METRICS},
        duration_s=float(rec.duration_s),
        device=rec.device,
        mlflow_run_id=rec.mlflow_run_id,
        error=rec.error,
        params=json.dumps(params, sort_keys=True),
        created_at=utc_now(),
    )


def read(session: Session, study: str) -> list[dict[str, Any]]:
    """Every confirmation row of the study, by candidate, then seed, then data seed."""
    c = ConfirmationRow
    columns = [
        c.lambda_.label("lambda") if n == "lambda" else getattr(c, n) for n in CONFIRMATION_COLUMNS
    ]
    query = (
        sa.select(*columns)
        .where(c.study_id == find_study_id(session, study))
        .order_by(c.candidate, c.seed, c.data_seed)
    )
    return [dict(row._mapping) for row in session.execute(query)]


def records(session: Session, study: str) -> list[TrialRecord]:
    """Every confirmation row of the study as the record it was written from, without
    history or weights (only MLflow keeps those): what `sweeps check --repair` logs again."""
    c = ConfirmationRow
    query = (
        sa.select(c)
        .where(c.study_id == find_study_id(session, study))
        .order_by(c.candidate, c.seed, c.data_seed)
    )
    return [_record(study, row) for row in session.scalars(query)]


def _record(study: str, row: ConfirmationRow) -> TrialRecord:
    state = TrialState(row.state)
    final = {name: getattr(row, name) for name in FINAL_METRICS}
    at_ms = int(row.created_at.timestamp() * 1000)
    return TrialRecord(
        study=study,
        number=row.candidate,
        state=state,
        params=json.loads(row.params),
        final=final,
        value=final["val_loss"] if state is TrialState.COMPLETE else None,
        duration_s=row.duration_s,
        device=row.device,
        start_time_ms=at_ms - round(row.duration_s * 1000),
        end_time_ms=at_ms,
        error=row.error,
        mlflow_run_id=row.mlflow_run_id,
    )


def set_run(session: Session, study: str, key: Key, run_id: str) -> None:
    """Point the row of `key` at MLflow run `run_id` (committed by the caller)."""
    c = ConfirmationRow
    candidate, seed, data_seed = key
    session.execute(
        sa.update(c)
        .where(
            c.study_id == find_study_id(session, study),
            c.candidate == candidate,
            c.seed == seed,
            c.data_seed == data_seed,
        )
        .values(mlflow_run_id=run_id)
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)

"""Read-side SQL of the results store: the select constructs behind the query methods."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracking.errors import UnknownStudyError
from tracking.records import BEST_COLUMNS, COUNT_COLUMNS, TRIAL_COLUMNS, TrialState
from tracking.results.models import StudyRow, TrialRow

COMPLETE = TrialState.COMPLETE.value
# Stored configuration a record is rebuilt from, beside TRIAL_COLUMNS (sweeps.recording).
CONFIG_COLUMNS = ("epochs", "seed")
# Names that are not a TrialRow attribute of the same name.
_SOURCES: dict[str, Any] = {
    "lambda": TrialRow.lambda_,
    "study": StudyRow.name,
    "trial_number": TrialRow.number,
}


def _selected(names: Sequence[str]) -> tuple[sa.ColumnElement[Any], ...]:
    """The SQL columns behind `names`, each labelled with its name."""
    return tuple(
        (_SOURCES[name] if name in _SOURCES else getattr(TrialRow, name)).label(name)
        for name in names
    )


_AT = TRIAL_COLUMNS.index("device") + 1  # the configuration beside the device, as stored
TRIAL_SELECT = _selected((*TRIAL_COLUMNS[:_AT], *CONFIG_COLUMNS, *TRIAL_COLUMNS[_AT:]))
BEST_SELECT = _selected(BEST_COLUMNS)


def summary_query() -> sa.Select[Any]:
    """Each study row with its trial counts per state and its best complete value."""
    t = TrialRow

    def count(state: TrialState) -> sa.ColumnElement[Any]:
        return sa.func.sum(sa.case((t.state == state.value, 1), else_=0))

    per_study = (
        sa.select(
            t.study_id,
            sa.func.count().label("trials"),
            count(TrialState.COMPLETE).label("complete"),
            count(TrialState.PRUNED).label("pruned"),
            count(TrialState.FAIL).label("failed"),
            sa.func.min(sa.case((t.state == COMPLETE, t.value))).label("best_value"),
        )
        .group_by(t.study_id)
        .subquery()
    )
    return sa.select(StudyRow, per_study).outerjoin(per_study, per_study.c.study_id == StudyRow.id)


def find_study(session: Session, name: str) -> StudyRow | None:
    return session.scalars(sa.select(StudyRow).where(StudyRow.name == name)).one_or_none()


def find_study_id(session: Session, name: str) -> int:
    found = session.scalar(sa.select(StudyRow.id).where(StudyRow.name == name))
    if found is None:
        raise UnknownStudyError(f"no study named '{name}'")
    return found


def trial_exists(session: Session, study_id: int, number: int) -> bool:
    query = sa.select(TrialRow.id).where(TrialRow.study_id == study_id, TrialRow.number == number)
    return session.scalar(query) is not None


def best_rows(
    session: Session, study_ids: Sequence[int], penalty: str | None
) -> list[dict[str, Any]]:
    """Rank complete trials per (study, penalty) by value, then number, and keep the first."""
    if not study_ids:
        return []
    t = TrialRow
    rank = sa.func.row_number().over(
        partition_by=(t.study_id, t.penalty), order_by=(t.value, t.number)
    )
    ranked = (
        sa.select(*BEST_SELECT, rank.label("rank"))
        .join(StudyRow, StudyRow.id == t.study_id)
        .where(t.study_id.in_(study_ids), t.state == COMPLETE, t.value.is_not(None))
    )
    if penalty is not None:
        ranked = ranked.where(t.penalty == penalty)
    inner = ranked.subquery()
    columns = [column for column in inner.c if column.name != "rank"]
    query = sa.select(*columns).where(inner.c.rank == 1).order_by(inner.c.value, inner.c.penalty)
    return [dict(row._mapping) for row in session.execute(query)]


def penalty_counts(
    session: Session, study_ids: Sequence[int]
) -> dict[tuple[int, str], dict[str, int]]:
    """(study id, penalty) → its trials per COUNT_COLUMNS, for penalties with any trial."""
    if not study_ids:
        return {}
    t = TrialRow
    reused = t.reused_from.is_not(None)

    def count(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
        return sa.func.sum(sa.case((condition, 1), else_=0))

    query = (
        sa.select(
            t.study_id,
            t.penalty,
            count(sa.and_(t.state == COMPLETE, sa.not_(reused))).label("complete"),
            count(t.state == TrialState.PRUNED.value).label("pruned"),
            count(t.state == TrialState.FAIL.value).label("failed"),
            count(reused).label("reused"),
        )
        .where(t.study_id.in_(study_ids))
        .group_by(t.study_id, t.penalty)
    )
    return {
        (row.study_id, row.penalty): {c: int(getattr(row, c) or 0) for c in COUNT_COLUMNS}
        for row in session.execute(query)
    }

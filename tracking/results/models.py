"""SQLAlchemy models of the results tables: one row per study, one per trial.

The tables live next to Optuna's in the same database, hence the `sweeps_` prefix and a
version table of our own. Column names are the user-facing names (`lambda`, `val_loss`, ...)
so plain SQL reads like the CLI's JSON.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

TABLE_PREFIX = "sweeps_"
# Optuna's (and MLflow's) Alembic owns `alembic_version`; ours must never touch it.
VERSION_TABLE = "sweeps_alembic_version"
# The newest migration; a test checks it against the Alembic scripts, so queries can tell
# "at head" from the version table without importing Alembic.
HEAD_REVISION = "0005"
KNOWN_REVISIONS = ("0001", "0002", "0003", "0004", "0005")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite has no time zones and hands back naive values; they were written as UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; results timestamps must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class StudyRow(Base):
    __tablename__ = "sweeps_studies"
    __table_args__ = (sa.UniqueConstraint("name", name="uq_sweeps_studies_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(512))
    task: Mapped[str] = mapped_column(sa.String(128))
    config: Mapped[str] = mapped_column(sa.Text)  # the sweep config as JSON text
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    mlflow_experiment_id: Mapped[str | None] = mapped_column(sa.String(64))
    mlflow_parent_run_id: Mapped[str | None] = mapped_column(sa.String(64))


class TrialRow(Base):
    __tablename__ = "sweeps_trials"
    __table_args__ = (
        sa.UniqueConstraint("study_id", "number", name="uq_sweeps_trials_study_number"),
        # Serves "best value per penalty of one study", the query people run most.
        sa.Index("ix_sweeps_trials_study_penalty_value", "study_id", "penalty", "value"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(
        sa.ForeignKey("sweeps_studies.id", name="fk_sweeps_trials_study_id")
    )
    number: Mapped[int] = mapped_column(sa.Integer)
    state: Mapped[str] = mapped_column(sa.String(16))  # a TrialState value
    penalty: Mapped[str] = mapped_column(sa.String(32))
    # sa.Double is 64-bit everywhere (DOUBLE PRECISION on PostgreSQL, not REAL).
    lambda_: Mapped[float | None] = mapped_column("lambda", sa.Double)
    l1_ratio: Mapped[float | None] = mapped_column(sa.Double)
    lr: Mapped[float | None] = mapped_column(sa.Double)
    epochs: Mapped[int | None] = mapped_column(sa.Integer)
    seed: Mapped[int | None] = mapped_column(sa.Integer)
    device: Mapped[str] = mapped_column(sa.String(64))
    train_loss: Mapped[float | None] = mapped_column(sa.Double)
    val_loss: Mapped[float | None] = mapped_column(sa.Double)
    test_loss: Mapped[float | None] = mapped_column(sa.Double)
    w_norm: Mapped[float | None] = mapped_column(sa.Double)
    penalty_value: Mapped[float | None] = mapped_column(sa.Double)  # since revision 0002
    # Classification tasks only (NULL for regression); since revision 0003.
    train_accuracy: Mapped[float | None] = mapped_column(sa.Double)
    val_accuracy: Mapped[float | None] = mapped_column(sa.Double)
    test_accuracy: Mapped[float | None] = mapped_column(sa.Double)
    value: Mapped[float | None] = mapped_column(sa.Double)  # the objective
    duration_s: Mapped[float] = mapped_column(sa.Double)
    mlflow_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    error: Mapped[str | None] = mapped_column(sa.Text)  # since revision 0002
    # The earlier trial an identical configuration took its result from; since 0004.
    reused_from: Mapped[int | None] = mapped_column(sa.Integer)
    params: Mapped[str] = mapped_column(sa.Text)  # TrialRecord.params as JSON text
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConfirmationRow(Base):
    """One candidate trial of a study retrained on one fresh seed (`sweeps confirm`);
    since revision 0005. With fresh data `data_seed` is `seed`, with --fixed-data the
    study's: the key tells the two apart."""

    __tablename__ = "sweeps_confirmations"
    __table_args__ = (
        sa.UniqueConstraint(
            "study_id", "candidate", "seed", "data_seed", name="uq_sweeps_confirmations_key"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(
        sa.ForeignKey("sweeps_studies.id", name="fk_sweeps_confirmations_study_id")
    )
    candidate: Mapped[int] = mapped_column(sa.Integer)  # the study's trial number
    seed: Mapped[int] = mapped_column(sa.BigInteger)
    data_seed: Mapped[int] = mapped_column(sa.BigInteger)
    state: Mapped[str] = mapped_column(sa.String(16))  # a TrialState value
    penalty: Mapped[str] = mapped_column(sa.String(32))
    lambda_: Mapped[float | None] = mapped_column("lambda", sa.Double)
    l1_ratio: Mapped[float | None] = mapped_column(sa.Double)
    train_loss: Mapped[float | None] = mapped_column(sa.Double)
    val_loss: Mapped[float | None] = mapped_column(sa.Double)
    test_loss: Mapped[float | None] = mapped_column(sa.Double)
    w_norm: Mapped[float | None] = mapped_column(sa.Double)
    penalty_value: Mapped[float | None] = mapped_column(sa.Double)
    train_accuracy: Mapped[float | None] = mapped_column(sa.Double)
    val_accuracy: Mapped[float | None] = mapped_column(sa.Double)
    test_accuracy: Mapped[float | None] = mapped_column(sa.Double)
    duration_s: Mapped[float] = mapped_column(sa.Double)
    device: Mapped[str] = mapped_column(sa.String(64))
    mlflow_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    error: Mapped[str | None] = mapped_column(sa.Text)
    params: Mapped[str] = mapped_column(sa.Text)  # TrialRecord.params as JSON text
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

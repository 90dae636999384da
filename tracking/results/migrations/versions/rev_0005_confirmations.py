"""Add sweeps_confirmations: each candidate of a study retrained on a fresh seed
(`sweeps confirm`), one row per (study, candidate, seed, data seed).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

METRICS = (
    "train_loss",
    "val_loss",
    "test_loss",
    "w_norm",
    "penalty_value",
    "train_accuracy",
    "val_accuracy",
    "test_accuracy",
)


def upgrade() -> None:
    op.create_table(
        "sweeps_confirmations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "study_id",
            sa.Integer,
            sa.ForeignKey("sweeps_studies.id", name="fk_sweeps_confirmations_study_id"),
            nullable=False,
        ),
        sa.Column("candidate", sa.Integer, nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("data_seed", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("penalty", sa.String(32), nullable=False),
        sa.Column("lambda", sa.Double, nullable=True),
        sa.Column("l1_ratio", sa.Double, nullable=True),
        *(sa.Column(name, sa.Double, nullable=True) for name in METRICS),
        sa.Column("duration_s", sa.Double, nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("mlflow_run_id", sa.String(64), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "study_id", "candidate", "seed", "data_seed", name="uq_sweeps_confirmations_key"
        ),
    )


def downgrade() -> None:
    op.drop_table("sweeps_confirmations")

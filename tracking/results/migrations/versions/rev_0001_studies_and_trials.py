"""Create sweeps_studies and sweeps_trials.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "sweeps_studies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("task", sa.String(128), nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mlflow_experiment_id", sa.String(64), nullable=True),
        sa.Column("mlflow_parent_run_id", sa.String(64), nullable=True),
        sa.UniqueConstraint("name", name="uq_sweeps_studies_name"),
    )
    op.create_table(
        "sweeps_trials",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_id", sa.Integer, nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("penalty", sa.String(32), nullable=False),
        sa.Column("lambda", sa.Double, nullable=True),
        sa.Column("l1_ratio", sa.Double, nullable=True),
        sa.Column("lr", sa.Double, nullable=True),
        sa.Column("epochs", sa.Integer, nullable=True),
        sa.Column("seed", sa.Integer, nullable=True),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("train_loss", sa.Double, nullable=True),
        sa.Column("val_loss", sa.Double, nullable=True),
        sa.Column("test_loss", sa.Double, nullable=True),
        sa.Column("w_norm", sa.Double, nullable=True),
        sa.Column("value", sa.Double, nullable=True),
        sa.Column("duration_s", sa.Double, nullable=False),
        sa.Column("mlflow_run_id", sa.String(64), nullable=True),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"], ["sweeps_studies.id"], name="fk_sweeps_trials_study_id"
        ),
        sa.UniqueConstraint("study_id", "number", name="uq_sweeps_trials_study_number"),
    )
    op.create_index(
        "ix_sweeps_trials_study_penalty_value", "sweeps_trials", ["study_id", "penalty", "value"]
    )


def downgrade() -> None:
    op.drop_index("ix_sweeps_trials_study_penalty_value", table_name="sweeps_trials")
    op.drop_table("sweeps_trials")
    op.drop_table("sweeps_studies")

"""Add sweeps_trials.penalty_value and sweeps_trials.error.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("sweeps_trials") as batch:
        batch.add_column(sa.Column("penalty_value", sa.Double, nullable=True))
        batch.add_column(sa.Column("error", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sweeps_trials") as batch:
        batch.drop_column("error")
        batch.drop_column("penalty_value")

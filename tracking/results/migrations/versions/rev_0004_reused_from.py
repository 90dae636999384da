"""Add sweeps_trials.reused_from: the earlier trial whose result an identical
configuration took instead of training again.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("sweeps_trials") as batch:
        batch.add_column(sa.Column("reused_from", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sweeps_trials") as batch:
        batch.drop_column("reused_from")

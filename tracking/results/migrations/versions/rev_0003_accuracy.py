"""Add sweeps_trials.train_accuracy, val_accuracy and test_accuracy (classification tasks).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

COLUMNS = ("train_accuracy", "val_accuracy", "test_accuracy")


def upgrade() -> None:
    with op.batch_alter_table("sweeps_trials") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Double, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sweeps_trials") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)

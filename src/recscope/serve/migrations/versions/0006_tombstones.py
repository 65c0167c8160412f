"""Tombstones of forgotten users (``Store.forget``): who, when, and what was deleted, so every
reader hides the run's training events of a user who asked to be forgotten.

Revision ID: 0006
Revises: 0005
Create Date: 2027-01-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tombstones",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_key", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("forgotten_at", sa.Float(), nullable=False),
        sa.Column("deleted", sa.JSON(), nullable=False),
        sa.Column("first_received", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_tombstones_user_key", "tombstones", ["user_key"])


def downgrade() -> None:
    op.drop_index("ix_tombstones_user_key", table_name="tombstones")
    op.drop_table("tombstones")

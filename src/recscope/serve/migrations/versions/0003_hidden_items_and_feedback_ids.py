"""Hidden items (kept out of every list, the run's items included) and the client's feedback_id.

``feedback.feedback_id`` is unique in the database (a unique index; NULLs, feedback sent
without an id, never collide on SQLite or PostgreSQL): two workers storing the same feedback
at once cannot both succeed, whatever each read before.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-19
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "hidden_items",
        sa.Column("item_key", sa.String(length=64), nullable=False),
        sa.Column("item_id", sa.Text(), nullable=False),
        sa.Column("for_good", sa.Boolean(), nullable=False),
        sa.Column("hidden_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("item_key"),
    )
    # A nullable column is added in place on both backends (no table copy on SQLite).
    op.add_column("feedback", sa.Column("feedback_id", sa.String(length=128), nullable=True))
    op.create_index("ix_feedback_feedback_id", "feedback", ["feedback_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_feedback_feedback_id", table_name="feedback")
    with op.batch_alter_table("feedback") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("feedback_id")
    op.drop_table("hidden_items")

"""The change sequence workers follow: items added or updated, and the model version to serve.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "changes",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    # Items added before this revision: workers find them through the items table at start-up;
    # the sequence starts with them so that a follower's first read sees every stored item.
    op.execute("INSERT INTO changes (kind, subject, created_at) SELECT 'item', item_id, added_at FROM items")


def downgrade() -> None:
    op.drop_table("changes")

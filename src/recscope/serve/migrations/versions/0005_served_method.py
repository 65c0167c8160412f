"""The explanation method a served list was explained by (``served.method``; NULL: a list
served without explanations, and every list logged before this revision), so the share of
"explanation helpful" feedback can be told per method and per model version.

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-16
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column is added in place on both backends (no table copy on SQLite).
    op.add_column("served", sa.Column("method", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("served") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("method")

"""Runs track their last activity (to fail abandoned ones) and their stored bytes (to cap a run's size).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("updated_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("byte_count", sa.BigInteger(), nullable=False, server_default="0"))
    op.execute("UPDATE runs SET updated_at = COALESCE(completed_at, created_at)")
    op.execute("UPDATE runs SET byte_count = COALESCE((SELECT SUM(LENGTH(blob)) FROM records WHERE records.run_id = runs.id), 0)")


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("byte_count")
        batch.drop_column("updated_at")

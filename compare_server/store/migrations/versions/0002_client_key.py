"""Runs get an optional client key, so an offline bundle pushed twice is stored once.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("client_key", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_runs_client_key", ["client_key"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("uq_runs_client_key", type_="unique")
        batch.drop_column("client_key")

"""A covering index of (run, index, sha256): closing a run reads its record hashes from the index
instead of every record's page (0.05 s -> a few ms for 10,000 records of 3 KB).

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_records_digest", "records", ["run_id", "idx", "sha256"])


def downgrade() -> None:
    op.drop_index("ix_records_digest", table_name="records")

"""Diff results cached per (run a, run b, metrics version); speed measurements kept with runs.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "diff_cache",
        sa.Column("run_a", sa.String(32), nullable=False),
        sa.Column("run_b", sa.String(32), nullable=False),
        sa.Column("metrics_version", sa.Integer(), nullable=False),
        sa.Column("report_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["run_a"], ["runs.id"], name="fk_diff_cache_run_a_runs", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_b"], ["runs.id"], name="fk_diff_cache_run_b_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_a", "run_b", "metrics_version", name="pk_diff_cache"),
    )
    op.create_table(
        "run_perf",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("p50_ms", sa.Float(), nullable=False),
        sa.Column("p95_ms", sa.Float(), nullable=False),
        sa.Column("p99_ms", sa.Float(), nullable=False),
        sa.Column("throughput", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_run_perf_run_id_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "batch_size", name="pk_run_perf"),
    )


def downgrade() -> None:
    op.drop_table("run_perf")
    op.drop_table("diff_cache")

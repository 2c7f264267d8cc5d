"""First schema: prompt sets, runs with their fingerprint columns, records.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

FINGERPRINT = (
    ("host", 255), ("os", 255), ("python", 64), ("torch", 64), ("torch_npu", 64), ("cann", 64),
    ("driver", 64), ("chip", 255), ("vllm", 64), ("vllm_ascend", 64), ("transformers", 64),
    ("backend", 32), ("device", 64), ("device_name", 255), ("dtype", 32), ("model_name", 255),
    ("model_digest", 64), ("mode", 16), ("label", 255),
)


def upgrade() -> None:
    op.create_table(
        "prompt_sets",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("prompts_json", sa.Text(), nullable=False),
        sa.Column("prompt_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_prompt_sets"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.Column("prompt_set_name", sa.String(200), nullable=False),
        sa.Column("prompt_set_digest", sa.String(64), nullable=False),
        sa.Column("prompt_count", sa.Integer(), nullable=False),
        sa.Column("record_count", sa.Integer(), nullable=False),
        sa.Column("options_json", sa.Text(), nullable=False),
        *[sa.Column(name, sa.String(size), nullable=False) for name, size in FINGERPRINT],
        sa.ForeignKeyConstraint(["prompt_set_digest"], ["prompt_sets.digest"], name="fk_runs_prompt_set_digest_prompt_sets"),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    for column in ("status", "created_at", "prompt_set_digest", "cann", "vllm", "vllm_ascend", "device", "model_name"):
        op.create_index(f"ix_runs_{column}", "runs", [column])
    op.create_index("ix_runs_model_device_dtype", "runs", ["model_name", "device", "dtype"])
    op.create_table(
        "records",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_records_run_id_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "idx", name="pk_records"),
    )


def downgrade() -> None:
    op.drop_table("records")
    op.drop_table("runs")
    op.drop_table("prompt_sets")

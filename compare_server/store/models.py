"""ORM tables. Only the store package imports this; rows never leave it (see entities.py).

Every fingerprint field is a column of its own so runs can be filtered and ordered by any of
them (CANN version, device, dtype, ...) with an index, not by parsing JSON.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from proto.messages import FINGERPRINT_FIELDS

# Named constraints, so migrations can refer to them on SQLite and PostgreSQL alike.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Every fingerprint field of the wire contract is a string column of runs, declared in RunRow
# below and indexed where runs are filtered by it.
FINGERPRINT_COLUMNS = FINGERPRINT_FIELDS


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class PromptSetRow(Base):
    """A prompt set's content, stored once per digest however many runs use it."""

    __tablename__ = "prompt_sets"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    prompts_json: Mapped[str] = mapped_column(Text)
    prompt_count: Mapped[int] = mapped_column(Integer)


class RunRow(Base):
    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    status_reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(index=True)
    completed_at: Mapped[datetime | None]
    prompt_set_name: Mapped[str] = mapped_column(String(200))
    prompt_set_digest: Mapped[str] = mapped_column(ForeignKey("prompt_sets.digest"), index=True)
    prompt_count: Mapped[int] = mapped_column(Integer)
    record_count: Mapped[int] = mapped_column(Integer, default=0)
    byte_count: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime | None]  # last record or state change: abandoned open runs are failed
    options_json: Mapped[str] = mapped_column(Text, default="{}")
    # Set by agents that may send the same run twice (offline bundles); unique when set.
    client_key: Mapped[str | None] = mapped_column(String(64), unique=True)

    host: Mapped[str] = mapped_column(String(255), default="")
    os: Mapped[str] = mapped_column(String(255), default="")
    python: Mapped[str] = mapped_column(String(64), default="")
    torch: Mapped[str] = mapped_column(String(64), default="")
    torch_npu: Mapped[str] = mapped_column(String(64), default="")
    cann: Mapped[str] = mapped_column(String(64), default="", index=True)
    driver: Mapped[str] = mapped_column(String(64), default="")
    chip: Mapped[str] = mapped_column(String(255), default="")
    vllm: Mapped[str] = mapped_column(String(64), default="", index=True)
    vllm_ascend: Mapped[str] = mapped_column(String(64), default="", index=True)
    transformers: Mapped[str] = mapped_column(String(64), default="")
    backend: Mapped[str] = mapped_column(String(32), default="")
    device: Mapped[str] = mapped_column(String(64), default="", index=True)
    device_name: Mapped[str] = mapped_column(String(255), default="")
    dtype: Mapped[str] = mapped_column(String(32), default="")
    model_name: Mapped[str] = mapped_column(String(255), default="", index=True)
    model_digest: Mapped[str] = mapped_column(String(64), default="")
    mode: Mapped[str] = mapped_column(String(16), default="")
    label: Mapped[str] = mapped_column(String(255), default="")
    cuda: Mapped[str] = mapped_column(String(64), default="")


class RecordRow(Base):
    """One prompt's outputs as safetensors bytes; (run, index) is unique, so a resent record is refused."""

    __tablename__ = "records"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    blob: Mapped[bytes] = mapped_column(LargeBinary)


class DiffCacheRow(Base):
    """A diff's metrics (the report without its gates), valid forever: complete runs never change."""

    __tablename__ = "diff_cache"
    run_a: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    run_b: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    metrics_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class PerfRow(Base):
    """Speed at one batch size, measured by the agent after warm-up (`cmp capture --perf`)."""

    __tablename__ = "run_perf"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    batch_size: Mapped[int] = mapped_column(Integer, primary_key=True)
    batches: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)  # per request: batch latency / batch size
    p50_ms: Mapped[float] = mapped_column(Float)  # batch latency percentiles
    p95_ms: Mapped[float] = mapped_column(Float)
    p99_ms: Mapped[float] = mapped_column(Float)
    throughput: Mapped[float] = mapped_column(Float)  # requests per second


PERF_FIELDS = tuple(c.name for c in PerfRow.__table__.columns if c.name != "run_id")

Index("ix_runs_model_device_dtype", RunRow.model_name, RunRow.device, RunRow.dtype)

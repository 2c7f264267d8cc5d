"""Plain values that leave the store: no SQLAlchemy here, so the CLI and metrics can use them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

RUN_OPEN, RUN_COMPLETE, RUN_FAILED = "open", "complete", "failed"


@dataclass(frozen=True)
class Run:
    id: str
    status: str
    status_reason: str
    created_at: datetime
    completed_at: datetime | None
    prompt_set_name: str
    prompt_set_digest: str
    prompt_count: int
    record_count: int
    byte_count: int = 0
    fingerprint: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """"embed" or "logprobs": which record schema the run's records follow."""
        return "embed" if self.fingerprint.get("mode") == "embed" else "logprobs"


class StoredRecord(NamedTuple):
    """One stored record. A tuple, not a dataclass: diffs make them by the ten thousand."""

    index: int
    sha256: str
    blob: bytes


@dataclass(frozen=True)
class RunFilter:
    """Which runs to list; empty fields match everything. `where` holds versions.Where conditions."""

    model: str = ""
    device: str = ""
    dtype: str = ""
    backend: str = ""
    mode: str = ""
    label: str = ""
    status: str = ""
    since: datetime | None = None
    until: datetime | None = None
    where: tuple = ()
    limit: int = 0

"""Finding runs: the store's column filters plus version-aware `--where` conditions.

    runs = find_runs(store, RunFilter(model="Pleias-RAG-350M", device="npu",
                                      where=(parse_where("cann>=8.5"),)))
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from compare_server.entities import Run, RunFilter
from compare_server.errors import InvalidInput
from compare_server.versions import WhereError, parse_where
from proto.messages import FINGERPRINT_FIELDS


def find_runs(store, filters: RunFilter) -> list[Run]:
    """Runs matching every filter, newest first, at most filters.limit of them."""
    if not filters.where:
        return store.list_runs(filters=filters)
    runs = [r for r in store.list_runs(filters=replace(filters, limit=0))
            if all(w.matches(r.fingerprint) for w in filters.where)]
    return runs[: filters.limit] if filters.limit else runs


def parse_time(value: str, option: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)
    except ValueError:
        raise InvalidInput(f"{option} {value!r}: expected an ISO date or time, e.g. 2026-05-20 or 2026-05-20T08:30") from None


def run_filter(*, model="", device="", dtype="", backend="", mode="", label="", status="", since="", until="",
               where=(), limit=0) -> RunFilter:
    """A RunFilter from strings as the CLI and the wire carry them; raises InvalidInput."""
    try:
        conditions = tuple(parse_where(w, FINGERPRINT_FIELDS) for w in where)
    except WhereError as e:
        raise InvalidInput(str(e)) from None
    return RunFilter(model=model, device=device, dtype=dtype, backend=backend, mode=mode, label=label,
                     status=status, since=parse_time(since, "--since"), until=parse_time(until, "--until"),
                     where=conditions, limit=limit)

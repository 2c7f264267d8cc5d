"""Ingest: check each uploaded record against its run's kind, then store a message's records at once."""

from __future__ import annotations

from compare_server.errors import InvalidInput
from proto.codec import RecordError, decode, validate
from proto.digests import record_sha256


def ingest_batch(store, run_id: str, records: list[tuple[int, bytes]], kinds: dict[str, str],
                 max_run_bytes: int = 0) -> tuple[int, int]:
    """Validates and stores one message's (index, blob) records; returns (stored, run total).

    `kinds` caches each run's record kind across the messages of one stream. Any bad record
    refuses the whole message, so nothing partial is stored.
    """
    if not run_id:
        raise InvalidInput("a record batch without run_id: open a run first and send its id")
    if run_id not in kinds:
        kinds[run_id] = store.get_run(run_id).kind
    kind = kinds[run_id]
    rows = []
    for index, blob in records:
        try:
            validate(decode(blob), kind)  # views into the blob: nothing is copied
        except RecordError as e:
            raise InvalidInput(f"run {run_id} record {index}: {e}") from None
        rows.append((index, blob, record_sha256(blob)))
    total = store.add_records(run_id, rows, max_run_bytes=max_run_bytes)
    return len(rows), total

"""Ingest: check each uploaded record against its run's kind and hash it, ready for the store to
insert a message's records at once."""

from __future__ import annotations

from compare_server.errors import InvalidInput
from proto.codec import RecordError, check
from proto.digests import record_sha256


def prepare_batch(store, run_id: str, records, kinds: dict[str, str]) -> tuple[str, list[tuple[int, bytes, str]]]:
    """Validates one message's records (anything with .index and .blob, such as pb.Record);
    returns (run_id, [(index, blob, sha256)]) for store.add_records.

    `kinds` caches each run's record kind across the messages of one stream. Any bad record
    refuses the whole message, so nothing partial is stored.
    """
    if not run_id:
        raise InvalidInput("a record batch without run_id: open a run first and send its id")
    if run_id not in kinds:
        kinds[run_id] = store.get_run(run_id).kind
    kind = kinds[run_id]
    rows = []
    for record in records:
        index, blob = record.index, record.blob
        try:
            check(blob, kind)  # one header check per distinct header: nothing is decoded or copied
        except RecordError as e:
            raise InvalidInput(f"run {run_id} record {index}: {e}") from None
        rows.append((index, blob, record_sha256(blob)))
    return run_id, rows

"""Content digests of the wire contract, computed the same way by agents and the server."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable


def prompt_digest(prompts: Iterable[tuple[str, str]]) -> str:
    """sha256 of the canonical JSON of (id, text) pairs: equal digests mean identical prompts."""
    canonical = json.dumps(
        [{"id": pid, "text": text} for pid, text in prompts],
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def record_sha256(blob: bytes) -> str:
    """Hex sha256 of one record's blob."""
    return hashlib.sha256(blob).hexdigest()


def run_digest(record_hashes: Iterable[str]) -> str:
    """A run's digest: sha256 over its records' sha256 values (hex strings), in index order.

    Agent and server compute it independently; CloseRun succeeds only when they agree.
    """
    h = hashlib.sha256()
    for hex_digest in record_hashes:
        h.update(bytes.fromhex(hex_digest))
    return h.hexdigest()

"""Content digests of the wire contract, computed the same way by agents and the server."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable


def prompt_digest(prompts: Iterable[tuple[str, str]]) -> str:
    """sha256 of the canonical JSON of (id, text) pairs: equal digests mean identical prompts."""
    return canonical_digest(canonical_prompts([{"id": pid, "text": text} for pid, text in prompts]))


def canonical_prompts(prompts: list[dict[str, str]]) -> str:
    """The canonical JSON of a prompt set's {"id", "text"} objects: what its digest hashes, and
    what the server stores (one encoding serves both)."""
    return json.dumps(prompts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def canonical_digest(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def record_sha256(blob: bytes) -> str:
    """Hex sha256 of one record's blob."""
    return hashlib.sha256(blob).hexdigest()


def run_digest(record_hashes: Iterable[str]) -> str:
    """A run's digest: sha256 over its records' sha256 values (hex strings), in index order.

    Agent and server compute it independently; CloseRun succeeds only when they agree.
    """
    return extend_run_digest(hashlib.sha256(), record_hashes).hexdigest()


def extend_run_digest(h, record_hashes: Iterable[str]):
    """Feeds record hashes (hex strings, in index order) into a run digest's sha256 state; returns it.

    The server keeps one such state per run whose records arrive in order (see Store.add_records).
    """
    for hex_digest in record_hashes:
        h.update(bytes.fromhex(hex_digest))
    return h

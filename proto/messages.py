"""Conversions between wire messages and plain dicts, shared by agents, server and CLI."""

from __future__ import annotations

from proto import cmp_pb2 as pb

# Every string field of Fingerprint, in .proto order ("options" is the map beside them).
FINGERPRINT_FIELDS = tuple(f.name for f in pb.Fingerprint.DESCRIPTOR.fields if f.name != "options")


def fingerprint_to_pb(fingerprint: dict[str, str], options: dict[str, str]) -> pb.Fingerprint:
    return pb.Fingerprint(
        **{k: str(fingerprint.get(k) or "") for k in FINGERPRINT_FIELDS},
        options={k: str(v) for k, v in options.items()},
    )


def fingerprint_from_pb(msg: pb.Fingerprint) -> tuple[dict[str, str], dict[str, str]]:
    return {k: getattr(msg, k) for k in FINGERPRINT_FIELDS}, dict(msg.options)


PERF_FIELDS = tuple(f.name for f in pb.PerfPoint.DESCRIPTOR.fields)


def perf_to_pb(points: list[dict]) -> list[pb.PerfPoint]:
    return [pb.PerfPoint(**{k: p[k] for k in PERF_FIELDS}) for p in points]


def perf_from_pb(points) -> list[dict]:
    return [{k: getattr(p, k) for k in PERF_FIELDS} for p in points]


def run_from_pb(msg: pb.Run) -> dict:
    """A run as a JSON-ready dict: what `cmp runs --json` and `cmp show --json` print."""
    fingerprint, options = fingerprint_from_pb(msg.fingerprint)
    return {
        "id": msg.run_id,
        "status": msg.status,
        "status_reason": msg.status_reason,
        "created": msg.created,
        "completed": msg.completed,
        "record_count": msg.record_count,
        "prompt_set": {"name": msg.prompt_set_name, "digest": msg.prompt_set_digest, "count": msg.prompt_count},
        "fingerprint": fingerprint,
        "options": options,
        "perf": perf_from_pb(msg.perf),
    }

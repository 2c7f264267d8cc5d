"""Diff two stored runs: check they are comparable, decode their records, compute the metrics.

    report = diff_runs(store, "3f9c0a", "a71b22", thresholds={"cos_min": 0.999})
    report["verdict"]   # "PASS" | "FAIL"

The report is a plain JSON-ready dict (what `cmp diff --format json` prints).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from compare_server.allocator import gc_paused
from compare_server.entities import RUN_COMPLETE, Run
from compare_server.errors import CannotCompare, InvalidInput
from compare_server.metrics import METRICS_VERSION
from compare_server.metrics.embeddings import EmbeddingComparison
from compare_server.metrics.gates import GateError, evaluate_gates
from compare_server.metrics.logprobs import LogprobComparison
from compare_server.prefetch import Prefetched
from proto.codec import RecordError, Stacked, decode, decode_many, decode_stacked, stack, validate

# Below this mean cosine an embedding difference is not bf16-vs-fp32 rounding (that gives
# 0.999+); the nomic report's 0.886 was an implementation mismatch.
MISMATCH_COS = 0.99
# Prompts decoded and compared at a time: bounded memory for runs of any size.
CHUNK = 256
CHUNK_BYTES = 8 * 1024 * 1024
# A logprob diff is bound by its metrics kernel, which waits for the first chunk: its chunks start
# at 8 prompts and double (the first read falls from 6 ms to under 1). An embedding diff is bound
# by reading, which small chunks only slow.
FIRST_CHUNK = {"logprobs": 8}


def check_comparable(a: Run, b: Run) -> None:
    """Raises CannotCompare naming both runs and what differs."""
    for run in (a, b):
        if run.status != RUN_COMPLETE:
            raise CannotCompare(f"run {run.id} is {run.status}, not complete: only complete runs can be diffed")
    if a.prompt_set_digest != b.prompt_set_digest:
        raise CannotCompare(
            f"runs {a.id} and {b.id} used different prompt sets: {a.prompt_set_name} "
            f"({a.prompt_set_digest[:12]}) vs {b.prompt_set_name} ({b.prompt_set_digest[:12]})"
        )
    if a.kind != b.kind:
        raise CannotCompare(
            f"runs {a.id} and {b.id} have different modes: {a.fingerprint['mode']} vs {b.fingerprint['mode']}"
        )


def _decode(run: Run, records) -> list[dict[str, np.ndarray]]:
    out = []
    for rec in records:
        try:
            arrays = decode(rec.blob)
            validate(arrays, run.kind)
        except RecordError as e:
            raise InvalidInput(f"run {run.id} record {rec.index}: {e}") from None
        out.append(arrays)
    return out


def _embeddings(run: Run, records) -> np.ndarray:
    """A chunk of records' embeddings as one [n, D] array: records of one shape share a header, so
    they decode as one strided view of their joined bytes."""
    try:
        stacked = decode_stacked([rec.blob for rec in records], "embed")
    except RecordError as e:
        raise InvalidInput(f"run {run.id} record {records[0].index}: {e}") from None
    if stacked is not None:
        return stacked["embedding"]
    embeddings = [r["embedding"] for r in _decode(run, records)]
    sizes = sorted({len(e) for e in embeddings})
    if len(sizes) > 1:
        raise InvalidInput(f"run {run.id} holds embeddings of different sizes ({sizes}) near record "
                           f"{records[0].index}: capture it again with one model")
    return np.stack(embeddings)


def _logprob_records(run: Run, records) -> list[dict] | Stacked:
    """A chunk of records, stacked when they share a header (records of one shape: the metrics
    kernel reads their blobs where they are), else one decoded record per prompt (greedy outputs
    of different lengths)."""
    blobs = [rec.blob for rec in records]
    try:
        stacked = stack(blobs, "logprobs")
        return stacked if stacked is not None else decode_many(blobs, "logprobs")
    except RecordError:
        return _decode(run, records)  # one by one, to name the record that is wrong


def record_chunks(store, a: Run, b: Run):
    """Both runs' stored records, prompt-aligned, a chunk of prompts at a time (streamed).

    A chunk holds at most CHUNK prompts and about CHUNK_BYTES of each run's records, so wide
    records (a 65,536-wide embedding is 256 KB) come a few at a time.
    """
    record_bytes = max(run.byte_count // max(run.record_count, 1) for run in (a, b))
    chunk = max(1, min(CHUNK, CHUNK_BYTES // max(record_bytes, 1)))
    first = FIRST_CHUNK.get(a.kind)
    parts_a, parts_b = store.iter_records(a.id, chunk, first), store.iter_records(b.id, chunk, first)
    try:
        yield from zip(parts_a, parts_b, strict=True)
    finally:  # release both database cursors now, not whenever the generators are collected
        parts_a.close()
        parts_b.close()


def _json_number(x):
    """NaN and infinities become None: JSON has no such numbers."""
    if isinstance(x, (np.integer, int)) and not isinstance(x, bool):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    return x


def _json_column(values: np.ndarray, none_below_zero: bool = False) -> list:
    """A per-prompt array as JSON values: NaN and infinities (and, where asked, negatives) become None."""
    out = values.tolist()
    missing = ~np.isfinite(values) if values.dtype.kind == "f" else np.zeros(len(values), bool)
    if none_below_zero:
        missing |= values < 0
    for i in np.flatnonzero(missing).tolist():
        out[i] = None
    return out


@functools.lru_cache(maxsize=None)
def _rows(keys: tuple[str, ...]):
    """A function from value tuples to report rows {key: value}. It is compiled for these keys so
    each row is one dict display: 10,000 rows take 3.4 ms, against 7.9 ms with dict(zip(keys, row))."""
    values = [f"v{i}" for i in range(len(keys))]
    row = ", ".join(f"{key!r}: {value}" for key, value in zip(keys, values))
    return eval(f"lambda rows: [{{{row}}} for {', '.join(values)}, in rows]")  # keys are metric names, never input


def _run_summary(run: Run) -> dict:
    f = run.fingerprint
    return {
        "id": run.id, "model": f["model_name"], "device": f["device"], "device_name": f["device_name"],
        "dtype": f["dtype"], "backend": f["backend"], "mode": f["mode"], "label": f["label"],
    }


def compute_diff(store, a: Run, b: Run) -> dict:
    """Everything about two comparable runs that does not depend on gates: what the cache keeps."""
    with gc_paused():  # a diff makes no reference cycles, only containers the collector would walk
        return _compute_diff(store, a, b)


def _compute_diff(store, a: Run, b: Run) -> dict:
    kind = a.kind
    notes: list[str] = []
    if a.record_count != b.record_count:
        raise CannotCompare(f"runs {a.id} and {b.id} hold {a.record_count} and {b.record_count} records")
    decode_chunk = _embeddings if kind == "embed" else _logprob_records
    decoded = ((decode_chunk(a, ra), decode_chunk(b, rb)) for ra, rb in record_chunks(store, a, b))
    with Prefetched(decoded) as chunks:
        prompts = store.get_prompts(a.prompt_set_digest)  # read while the first chunks stream in
        if kind == "embed":
            comparison = EmbeddingComparison(len(prompts))
            for ea, eb in chunks:
                if ea.shape[1] != eb.shape[1]:
                    raise CannotCompare(f"runs {a.id} and {b.id} have embeddings of different sizes: "
                                        f"{ea.shape[1]} vs {eb.shape[1]}")
                comparison.add(ea, eb)
        else:
            comparison = LogprobComparison("forced" in (a.fingerprint["mode"], b.fingerprint["mode"]))
            for ra, rb in chunks:
                comparison.add(ra, rb, reading=not chunks.exhausted)
    per, summary = comparison.result()
    if kind == "embed":
        detail = {"error_histogram": comparison.histogram()}
        if summary["cos_mean"] < MISMATCH_COS:
            notes.append(
                f"cos_mean {summary['cos_mean']:.4f} is far below the 0.999+ that bf16-vs-fp32 rounding gives: "
                "this looks like an implementation mismatch (pooling, normalisation, position encoding or "
                "architecture), not rounding"
            )
    else:
        detail = {"per_position": comparison.detail()}
        missing = len(prompts) - summary["prompts_compared"]
        if missing:
            notes.append(
                f"{missing} of {len(prompts)} prompts have no compared position: a run produced no token for "
                "them (OpenAI-compatible servers do not report an end-of-sequence token chosen first)"
            )
        if summary["diverged_prompts"]:
            notes.append(
                f"greedy outputs diverge in {summary['diverged_prompts']} of {len(prompts)} prompts "
                f"(earliest at position {summary['first_divergence']}); positions after a divergence are not compared"
                if not comparison.forced else f"{summary['diverged_prompts']} prompts have different scored tokens"
            )
    for side, run in (("a", a), ("b", b)):
        if summary.get(f"nonfinite_{side}"):
            notes.append(f"run {run.id} holds {summary[f'nonfinite_{side}']} NaN or infinite values: "
                         "metrics that touch them are NaN and fail their gates")
    columns = [_json_column(values, none_below_zero=name == "first_divergence") for name, values in per.items()]
    per_prompt = _rows(("index", "id", "text", *per))(
        zip(range(len(prompts)), [p["id"] for p in prompts], [p["text"] for p in prompts], *columns))
    return {
        "kind": kind,
        "metrics_version": METRICS_VERSION,
        "prompt_set": {"name": a.prompt_set_name, "digest": a.prompt_set_digest, "count": len(prompts)},
        "run_a": _run_summary(a),
        "run_b": _run_summary(b),
        "per_prompt": per_prompt,
        "summary": {k: _json_number(v) for k, v in summary.items()},
        "notes": notes,
        "detail": detail,
    }


def cached_diff(store, a: Run, b: Run) -> dict:
    """compute_diff, looked up first: complete runs never change, so a diff is computed once per
    metrics version."""
    core = store.get_cached_diff(a.id, b.id, METRICS_VERSION)
    if core is None:
        core = compute_diff(store, a, b)
        store.put_cached_diff(a.id, b.id, METRICS_VERSION, core)
    return core


def with_gates(core: dict, thresholds: dict[str, float] | None, detail: bool) -> dict:
    """The report: the diff's metrics plus gates and verdict under these thresholds."""
    gates, verdict = evaluate_gates(core["kind"], core["summary"], thresholds)
    report = {k: v for k, v in core.items() if detail or k != "detail"}
    report["gates"] = [{**g, "value": _json_number(g["value"])} for g in gates]
    report["verdict"] = verdict
    return report


def diff_runs(store, run_a: str, run_b: str, thresholds: dict[str, float] | None = None, detail: bool = False) -> dict:
    """Compares run_b against the baseline run_a; raises CannotCompare, NotFound or InvalidInput.

    detail adds what a picture needs: per-position values (logprobs) or an error histogram (embed).
    """
    a, b = store.get_run(run_a), store.get_run(run_b)
    check_comparable(a, b)
    try:
        evaluate_gates(a.kind, {}, thresholds)  # refuse a bad threshold before the expensive part
    except GateError as e:
        raise InvalidInput(str(e)) from None
    return with_gates(cached_diff(store, a, b), thresholds, detail)

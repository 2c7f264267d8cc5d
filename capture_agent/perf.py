"""Speed next to accuracy: latency and throughput at several batch sizes, as the reports measure.

    points = measure(backend, texts, batch_sizes=[1, 4, 16])

For each batch size: warm-up calls first (compilation, caches), then timed calls until at least
MIN_CALLS calls and MIN_SECONDS have passed. Each call is one backend batch (an embedding forward
pass, or a greedy generation of the capture's max_new_tokens), synchronised with the device.
"""

from __future__ import annotations

import itertools
import time

import numpy as np

WARMUP_CALLS = 2
MIN_CALLS = 5
MIN_SECONDS = 1.0
MAX_CALLS = 200


class PerfError(ValueError):
    """Batch sizes that cannot be measured."""


def parse_batch_sizes(text: str) -> list[int]:
    """'1,4,16' -> [1, 4, 16]."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise PerfError(f"--perf {text!r}: expected batch sizes like 1,4,16") from None
    if not sizes or min(sizes) < 1:
        raise PerfError(f"--perf {text!r}: batch sizes must be 1 or more")
    return sorted(set(sizes))


def measure(backend, texts: list[str], batch_sizes: list[int], clock=time.perf_counter) -> list[dict]:
    """One point per batch size: per-request latency, call-latency percentiles, throughput."""
    points = []
    cycle = itertools.cycle(texts)
    for bs in batch_sizes:
        for _ in range(WARMUP_CALLS):
            backend.run_batch([next(cycle) for _ in range(bs)])
        calls: list[float] = []
        started = clock()
        while len(calls) < MAX_CALLS and (len(calls) < MIN_CALLS or clock() - started < MIN_SECONDS):
            batch = [next(cycle) for _ in range(bs)]
            t0 = clock()
            backend.run_batch(batch)
            calls.append(clock() - t0)
        ms = np.asarray(calls) * 1000.0
        points.append({
            "batch_size": bs, "batches": len(calls), "latency_ms": float(ms.mean() / bs),
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "throughput": float(bs / (ms.mean() / 1000.0)),
        })
    return points

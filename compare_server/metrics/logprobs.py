"""Logprob metrics (DESIGN.md "Metrics"): pure functions, vectorised over every compared position.

Positions compared: in forced scoring all of them; in greedy decoding those up to and including
the first position where the two runs chose different tokens (after it, the prefixes differ).

At each position, with Sa and Sb the two top-k id sets, the distributions are taken over
U = Sa ∪ Sb plus one tail bucket. An id missing from a run's top-k gets
min(that run's K-th probability, its left-over mass / number of missing ids); the tail takes
what remains. With K equal to the vocabulary size this is exactly the full-distribution metric.

    per_prompt, summary = logprob_metrics(records_a, records_b, forced=False)
    summary["top1_match"], summary["kl"]
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np

from compare_server.metrics.kernels import _kernels
from proto.codec import Stacked

# KL and relative error need a floor for probabilities a run gave (almost) nothing.
EPS = 1e-12

# The kernel shares its work among up to KERNEL_THREADS threads, one per KERNEL_PART positions.
KERNEL_PART = 4096
KERNEL_THREADS = 8
CORES = os.cpu_count() or 1  # asked once: the call costs 15 µs, and a diff measures chunk by chunk

POSITION_METRICS = ("top1_match", "topk_overlap", "prob_cos", "kl", "js", "mae", "spearman", "rel_err")
TOP1, KL = POSITION_METRICS.index("top1_match"), POSITION_METRICS.index("kl")  # the detail's columns


@dataclass
class Positions:
    """Compared positions in blocks: block i's are the first counts[i] rows of ids_a[i] (and of
    lp_a[i], ids_b[i], lp_b[i]). Records of one shape are one block each, as the store holds them;
    stack_positions makes one block per position."""

    counts: np.ndarray  # [n] int64
    ids_a: np.ndarray  # [n, T, K] int64, each row sorted by probability, most likely first
    lp_a: np.ndarray  # [n, T, K] float32, as records carry them
    ids_b: np.ndarray
    lp_b: np.ndarray

    @classmethod
    def of_rows(cls, ids_a, lp_a, ids_b, lp_b) -> "Positions":
        """Positions from [P, K] arrays, one block per row."""
        return cls(np.ones(len(ids_a), np.int64), ids_a[:, None], lp_a[:, None], ids_b[:, None], lp_b[:, None])

    def rows(self, x: np.ndarray) -> np.ndarray:
        """x's compared rows, in order, as one [P, K] array."""
        return x[np.arange(x.shape[1]) < self.counts[:, None]]


def alignment(records_a: list[dict], records_b: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(common, divergence) per prompt: how many positions both records have, and the first of
    them where their tokens differ (-1 for none). One comparison per group of prompts with the
    same common length, not one per prompt."""
    common = np.array([min(len(a["token_ids"]), len(b["token_ids"])) for a, b in zip(records_a, records_b)], np.int64)
    divergence = np.full(len(common), -1, np.int64)
    for t in set(common.tolist()) - {0}:
        idx = np.flatnonzero(common == t)
        differ = np.stack([records_a[i]["token_ids"][:t] for i in idx]) != np.stack([records_b[i]["token_ids"][:t] for i in idx])
        divergence[idx] = _first_difference(differ)
    return common, divergence


def _first_difference(differ: np.ndarray) -> np.ndarray:
    """Per row of a [n, T] bool array, the first True column; -1 for none."""
    return np.where(differ.any(axis=1), differ.argmax(axis=1), -1) if differ.shape[1] else np.full(len(differ), -1)


def _nonfinite(values: np.ndarray) -> int:
    return int(values.size - np.count_nonzero(np.isfinite(values)))


def _descending(lp: np.ndarray) -> bool:
    return bool((lp[..., :-1] >= lp[..., 1:]).all())


def _sorted_topk(ids: np.ndarray, lp: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if _descending(lp):  # agents send them sorted: no sort needed
        return ids[:, :k], lp[:, :k]
    order = np.argsort(-lp, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, order, 1), np.take_along_axis(lp, order, 1)


def stack_positions(records_a: list[dict], records_b: list[dict], lengths: list[int], k: int) -> Positions:
    """Stacks the first lengths[i] positions of every prompt, each cut to its k most likely ids."""

    def stacked(records):
        kept = [(r["topk_ids"][:n], r["topk_logprobs"][:n]) for r, n in zip(records, lengths) if n]
        if not kept:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        if len({ids.shape[1] for ids, _ in kept}) == 1:  # the usual case: one sort check for all
            return _sorted_topk(np.concatenate([i for i, _ in kept]), np.concatenate([lp for _, lp in kept]), k)
        parts = [_sorted_topk(ids, lp, k) for ids, lp in kept]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    return Positions.of_rows(*stacked(records_a), *stacked(records_b))


def union_distributions(ids_a, lp_a, ids_b, lp_b):
    """Both runs' probabilities over U = Sa ∪ Sb, padded to 2K columns, plus each tail.

    Returns (pa, pb, valid, tail_a, tail_b): pa, pb are [P, 2K] (columns 0..K-1 are Sa's ids,
    K..2K-1 are Sb's ids; a column of Sb already in Sa is invalid and zero), tails are [P].
    """
    top_a, top_b = np.exp(lp_a), np.exp(lp_b)
    same = ids_a[:, :, None] == ids_b[:, None, :]  # [P, K, K]
    a_in_b, b_in_a = same.any(axis=2), same.any(axis=1)
    where_in_b = same.argmax(axis=2)

    def fill(top, missing):
        leftover = np.clip(1.0 - top.sum(axis=1), 0.0, None)
        return np.minimum(top[:, -1], leftover / np.maximum(missing, 1))

    fill_a = fill(top_a, (~b_in_a).sum(axis=1))
    fill_b = fill(top_b, (~a_in_b).sum(axis=1))
    k = ids_a.shape[1]
    valid = np.concatenate([np.ones_like(a_in_b), ~b_in_a], axis=1)
    pa = np.concatenate([top_a, np.broadcast_to(fill_a[:, None], (len(top_a), k))], axis=1)
    pb = np.concatenate([np.where(a_in_b, np.take_along_axis(top_b, where_in_b, 1), fill_b[:, None]), top_b], axis=1)
    pa, pb = pa * valid, pb * valid
    tail_a = np.clip(1.0 - pa.sum(axis=1), 0.0, None)
    tail_b = np.clip(1.0 - pb.sum(axis=1), 0.0, None)
    return pa, pb, valid, tail_a, tail_b


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise KL(p‖q) in nats; terms with p = 0 contribute nothing."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(np.maximum(p, EPS)) - np.log(np.maximum(q, EPS))), 0.0)
    return terms.sum(axis=1)


def _ranks(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Row-wise ranks (1-based, ties averaged) among the valid entries; O(M log M) per row.

    Invalid entries sort after every value, so they never share a valid entry's rank.
    """
    m = x.shape[1]
    keyed = np.where(valid, x, np.inf)
    order = np.argsort(keyed, axis=1, kind="stable")
    s = np.take_along_axis(keyed, order, 1)
    columns = np.broadcast_to(np.arange(m), s.shape)
    starts = np.concatenate([np.ones((len(s), 1), bool), s[:, 1:] != s[:, :-1]], axis=1)
    ends = np.concatenate([s[:, 1:] != s[:, :-1], np.ones((len(s), 1), bool)], axis=1)
    first = np.maximum.accumulate(np.where(starts, columns, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, columns, m)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty_like(s)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks


def _masked_pearson(x: np.ndarray, y: np.ndarray, valid: np.ndarray) -> np.ndarray:
    n = valid.sum(axis=1)
    xm = np.where(valid, x - (x * valid).sum(axis=1, keepdims=True) / n[:, None], 0.0)
    ym = np.where(valid, y - (y * valid).sum(axis=1, keepdims=True) / n[:, None], 0.0)
    denom = np.sqrt((xm * xm).sum(axis=1) * (ym * ym).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (xm * ym).sum(axis=1) / denom, np.nan)


def distribution_metrics(pa, pb, valid, tail_a, tail_b) -> dict[str, np.ndarray]:
    """prob_cos, kl (A‖B), js, mae over U + tail; spearman and rel_err over U. One value per row."""
    fa = np.concatenate([pa, tail_a[:, None]], axis=1)
    fb = np.concatenate([pb, tail_b[:, None]], axis=1)
    # Each log once: KL and JS share them (terms with p = 0 contribute nothing).
    la, lb = np.log(np.maximum(fa, EPS)), np.log(np.maximum(fb, EPS))
    lm = np.log(np.maximum(0.5 * (fa + fb), EPS))
    with np.errstate(invalid="ignore", divide="ignore"):
        prob_cos = (fa * fb).sum(axis=1) / np.sqrt((fa * fa).sum(axis=1) * (fb * fb).sum(axis=1))
        rel = np.where(valid & (pa > 0), np.abs(pa - pb) / np.where(pa > 0, pa, 1.0), 0.0)
        rel_err = rel.sum(axis=1) / (valid & (pa > 0)).sum(axis=1)
    return {
        "prob_cos": prob_cos,
        "kl": np.where(fa > 0, fa * (la - lb), 0.0).sum(axis=1),
        "js": 0.5 * np.where(fa > 0, fa * (la - lm), 0.0).sum(axis=1) + 0.5 * np.where(fb > 0, fb * (lb - lm), 0.0).sum(axis=1),
        "mae": np.abs(fa - fb).sum(axis=1) / (valid.sum(axis=1) + 1),
        "spearman": _masked_pearson(_ranks(pa, valid), _ranks(pb, valid), valid),
        "rel_err": rel_err,
    }


@dataclass
class Measured:
    """What measure_positions finds: every metric at every position, each block's means, and how
    many rows were not sorted most likely first (or held a NaN), whose values are then not the
    metrics: sort those rows (stack_positions does) and measure again."""

    rows: np.ndarray  # [P, 8]: the POSITION_METRICS at each position, in order
    block_means: np.ndarray  # [n, 8]: each block's mean of its finite values (NaN for none)
    unsorted: int
    nonfinite: tuple[int, int]  # NaN or infinite logprobs in each run's blocks, all T rows of them

    @property
    def values(self) -> dict[str, np.ndarray]:
        return {name: self.rows[:, i] for i, name in enumerate(POSITION_METRICS)}

    @property
    def means(self) -> dict[str, np.ndarray]:
        return {name: self.block_means[:, i] for i, name in enumerate(POSITION_METRICS)}


def position_metrics(pos: Positions, threads: int | None = None) -> dict[str, np.ndarray]:
    """Every POSITION_METRICS value at every compared position, in order."""
    return measure_positions(pos, threads).values


def _threads(rows: int, threads: int | None) -> int:
    return min(threads or CORES, KERNEL_THREADS, max(1, rows // KERNEL_PART))


def measure_positions(pos: Positions, threads: int | None = None) -> Measured:
    """The compiled kernel, else numpy. The kernel releases the GIL and shares a large input's
    blocks among `threads` threads of its own (default: the machine's cores, up to KERNEL_THREADS)."""
    rows = int(pos.counts.sum())
    if _kernels is None or not rows or not pos.lp_a.dtype == pos.lp_b.dtype == np.float32:
        return _measure_numpy(pos)
    out, means = np.empty((rows, len(POSITION_METRICS))), np.empty((len(pos.counts), len(POSITION_METRICS)))
    unsorted, nonfinite_a, nonfinite_b = _kernels.position_rows(pos.ids_a, pos.lp_a, pos.ids_b, pos.lp_b, pos.counts,
                                                                out, means, _threads(rows, threads))
    return Measured(out, means, unsorted, (nonfinite_a, nonfinite_b))


def measure_stacked(a: Stacked | dict, b: Stacked | dict, forced: bool, threads: int | None = None):
    """(divergence, lengths, Measured) for two runs' records of the same prompts, each run's of
    one shape: each prompt's first differing token (-1 for none), its compared positions (all of
    them if forced; in greedy decoding, up to and including the divergence, after which the
    prefixes differ) and their metrics. Records come as codec.stack gives them, or as its arrays().

    With the kernel and Stacked records this is one call that reads the blobs where they are,
    joining nothing, all of it without the GIL: the diff's reader runs beside it."""
    if _kernels is not None and isinstance(a, Stacked) and isinstance(b, Stacked) and sys.byteorder == "little":
        n, t, k = a.shape("topk_ids")
        counts, divergence = np.empty(n, np.int64), np.empty(n, np.int64)
        out, means = np.empty((n * t, len(POSITION_METRICS))), np.empty((n, len(POSITION_METRICS)))
        unsorted, nonfinite_a, nonfinite_b = _kernels.stacked_rows(
            a.blobs, b.blobs, _tensor_offsets(a), _tensor_offsets(b), t, k, forced, counts, divergence, out, means,
            _threads(n * t, threads))
        return divergence, counts, Measured(out[:counts.sum()], means, unsorted, (nonfinite_a, nonfinite_b))
    a, b = (x.arrays() if isinstance(x, Stacked) else x for x in (a, b))
    n, t, _ = a["topk_ids"].shape
    divergence = _first_difference(a["token_ids"] != b["token_ids"])
    lengths = np.full(n, t) if forced else np.where(divergence >= 0, divergence + 1, t)
    if lengths.any():
        measured = measure_positions(Positions(lengths, a["topk_ids"], a["topk_logprobs"], b["topk_ids"],
                                               b["topk_logprobs"]), threads)
    else:
        measured = Measured(np.empty((0, len(POSITION_METRICS))), np.full((n, len(POSITION_METRICS)), np.nan), 0,
                            (_nonfinite(a["topk_logprobs"]), _nonfinite(b["topk_logprobs"])))
    return divergence, lengths, measured


def _tensor_offsets(records: Stacked) -> tuple[int, int, int]:
    """Where the kernel finds a record's tokens, top-k ids and top-k logprobs (byte offsets)."""
    return tuple(records.tensors[name][2] for name in ("token_ids", "topk_ids", "topk_logprobs"))


def _measure_numpy(pos: Positions) -> Measured:
    values = position_metrics_numpy(pos)
    lp = (pos.rows(pos.lp_a), pos.rows(pos.lp_b))
    unsorted = sum(int((~(x[:, 1:] <= x[:, :-1])).any(axis=1).sum()) for x in lp)  # NaN counts as out of order
    return Measured(np.stack([values[name] for name in POSITION_METRICS], axis=1),
                    np.stack([_per_prompt_mean(values[name], pos.counts) for name in POSITION_METRICS], axis=1),
                    unsorted, (_nonfinite(pos.lp_a), _nonfinite(pos.lp_b)))


def position_metrics_numpy(pos: Positions) -> dict[str, np.ndarray]:
    """The reference for the kernel: the definitions, vectorised over positions in numpy."""
    ids_a, ids_b = pos.rows(pos.ids_a), pos.rows(pos.ids_b)
    lp_a, lp_b = pos.rows(pos.lp_a).astype(np.float64), pos.rows(pos.lp_b).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN and infinities are handled below
        pa, pb, valid, tail_a, tail_b = union_distributions(ids_a, lp_a, ids_b, lp_b)
        k = ids_a.shape[1]
        out = {
            "top1_match": (ids_a[:, 0] == ids_b[:, 0]).astype(np.float64),
            # Sb's columns are valid exactly where the id is not in Sa.
            "topk_overlap": (k - valid[:, k:].sum(axis=1)) / k,
        }
        out.update(distribution_metrics(pa, pb, valid, tail_a, tail_b))
    # A NaN or +inf logprob is no probability: the position's distribution metrics are NaN
    # (-inf is probability 0, and fine).
    bad = (np.isnan(lp_a) | (lp_a == np.inf) | np.isnan(lp_b) | (lp_b == np.inf)).any(axis=1)
    if bad.any():
        for name in POSITION_METRICS[2:]:
            out[name][bad] = np.nan
    return out


def _per_prompt_mean(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Mean of each prompt's finite values, where prompt i's are the lengths[i] after the previous
    prompt's; NaN for a prompt with none."""
    has, finite = lengths > 0, np.isfinite(values)
    if finite.all():  # the usual case: one pass of sums
        means = np.full(len(lengths), np.nan)
        if has.any():
            means[has] = np.add.reduceat(values, (np.cumsum(lengths) - lengths)[has]) / lengths[has]
        return means
    prompt = np.repeat(np.arange(len(lengths)), lengths)
    values, prompt = values[finite], prompt[finite]
    sums = np.bincount(prompt, weights=values, minlength=len(lengths))
    counts = np.bincount(prompt, minlength=len(lengths))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _full_first(a: dict, b: dict) -> tuple[float, float]:
    """Exact full-vocabulary (prob_cos, kl) at position 0 when both records carry full_logprobs."""
    if "full_logprobs" not in a or "full_logprobs" not in b or a["full_logprobs"].shape != b["full_logprobs"].shape:
        return float("nan"), float("nan")
    fa = np.exp(a["full_logprobs"].astype(np.float64))[None]
    fb = np.exp(b["full_logprobs"].astype(np.float64))[None]
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (fa * fb).sum() / np.sqrt((fa * fa).sum() * (fb * fb).sum())
    return float(cos), float(_kl(fa, fb)[0])


def _one_block(a, b) -> bool:
    """Whether two chunks are records of one and the same shape each, stacked (whether their rows
    are sorted as agents send them, the kernel finds out)."""
    if isinstance(a, Stacked) and isinstance(b, Stacked):
        return ("full_logprobs" not in a.tensors and "full_logprobs" not in b.tensors
                and a.shape("topk_ids") == b.shape("topk_ids") and a.shape("topk_ids")[2] > 0)
    return (isinstance(a, dict) and isinstance(b, dict) and "full_logprobs" not in a and "full_logprobs" not in b
            and a["topk_ids"].shape == b["topk_ids"].shape and a["topk_ids"].shape[2] > 0)


def _records(chunk: list[dict] | dict | Stacked) -> list[dict]:
    """A chunk as a list of records: stacked records are split into per-record views."""
    if isinstance(chunk, Stacked):
        chunk = chunk.arrays()
    if not isinstance(chunk, dict):
        return chunk
    return [{name: values[i] for name, values in chunk.items()} for i in range(len(chunk["token_ids"]))]


def _width(record: dict) -> int:
    return record["topk_ids"].shape[1] if record["topk_ids"].shape[0] else 0


class LogprobComparison:
    """A logprob diff accumulated chunk by chunk, prompts in order: runs of any size are compared
    without holding them in memory, and the result does not depend on the chunk size.

    Each prompt is compared on its own common K (the smaller top-k of its two records).

        comparison = LogprobComparison(forced=False)
        for chunk_a, chunk_b in chunks:
            comparison.add(chunk_a, chunk_b)
        per_prompt, summary = comparison.result()
    """

    DETAIL_LIMIT = 20_000  # per-position values kept for pictures

    def __init__(self, forced: bool):
        self.forced = forced
        # Per chunk, its per-prompt columns as arrays, joined once in result(): "means" [n, 8] (the
        # POSITION_METRICS), "full" [n, 2] or None (full_prob_cos_first, full_kl_first),
        # "positions", "first_divergence" and "widths".
        self.parts: list[dict[str, np.ndarray | None]] = []
        self.prompts = 0
        self.nonfinite = [0, 0]
        # KL and top-1 agreement at the first positions as JSON-ready lists, converted chunk by
        # chunk: the first chunks arrive while the diff waits for the database, so the report does
        # not wait for this at the end. detail_order keeps (prompt, position) arrays to check order.
        self.detail_lists: dict[str, list] = {"prompt": [], "position": [], "kl": [], "top1_match": []}
        self.detail_order: list[tuple[np.ndarray, np.ndarray]] = []
        self.detail_count = 0

    def add(self, records_a: list[dict] | Stacked | dict, records_b: list[dict] | Stacked | dict,
            reading: bool = False) -> None:
        """Adds the next prompts' records: lists of decoded records, or records of one shape as
        codec.stack gives them (the store's usual case, and much faster) or as its arrays().

        reading: the diff's reader is still reading beside this call. The kernel then leaves it a
        core: on two cores, a second kernel thread slowed the reader by a fifth and the diff by 1 ms."""
        threads = max(1, CORES - 1) if reading else None
        if not (_one_block(records_a, records_b) and self._add_block(records_a, records_b, threads)):
            self._add_records(_records(records_a), _records(records_b))

    def _add_block(self, a: Stacked | dict, b: Stacked | dict, threads: int | None) -> bool:
        """Adds stacked records in one pass; False, adding nothing, if a row is not sorted most
        likely first (the records path sorts it)."""
        divergence, lengths, measured = measure_stacked(a, b, self.forced, threads)
        if measured.unsorted:
            return False
        self._keep_detail(measured.rows, np.arange(len(lengths)), lengths)
        k = a.shape("topk_ids")[2] if isinstance(a, Stacked) else a["topk_ids"].shape[2]
        self._append(measured.block_means, divergence, lengths, np.where(lengths > 0, k, 0), None,
                     *measured.nonfinite)
        return True

    def _add_records(self, records_a: list[dict], records_b: list[dict]) -> None:
        n = len(records_a)
        common, divergence = alignment(records_a, records_b)
        lengths = (common if self.forced else np.where(divergence >= 0, divergence + 1, common)).tolist()
        widths = [min(_width(a), _width(b)) if length else 0 for a, b, length in zip(records_a, records_b, lengths)]
        means = np.full((n, len(POSITION_METRICS)), np.nan)
        for k in sorted({w for w in widths if w}):  # each prompt is compared on its common K
            idx = np.array([i for i in range(n) if widths[i] == k])
            kept = np.array([lengths[i] for i in idx])
            rows = measure_positions(stack_positions([records_a[i] for i in idx], [records_b[i] for i in idx], kept, k)).rows
            means[idx] = np.stack([_per_prompt_mean(column, kept) for column in rows.T], axis=1)
            self._keep_detail(rows, idx, kept)
        full = [_full_first(a, b) for a, b in zip(records_a, records_b)] if any(
            "full_logprobs" in r for r in records_a) else None
        self._append(means, divergence, lengths, widths, full,
                     sum(_nonfinite(r["topk_logprobs"]) for r in records_a),
                     sum(_nonfinite(r["topk_logprobs"]) for r in records_b))

    def _keep_detail(self, rows: np.ndarray, prompts: np.ndarray, lengths: np.ndarray) -> None:
        """Keeps KL and top-1 agreement at the first DETAIL_LIMIT positions, for pictures: rows are
        the metrics at the positions of `prompts` (indices in the chunk), lengths[i] each."""
        room = self.DETAIL_LIMIT - self.detail_count
        if room > 0:
            prompt = np.repeat(np.arange(len(lengths)), lengths)[:room]
            columns = (self.prompts + prompts[prompt], np.arange(len(prompt)) - (np.cumsum(lengths) - lengths)[prompt],
                       rows[:room, KL], rows[:room, TOP1])
            self.detail_order.append(columns[:2])
            for kept, column in zip(self.detail_lists.values(), columns):
                kept += column.tolist()
            self.detail_count += len(prompt)

    def _append(self, means, divergence, lengths, widths, full, nonfinite_a, nonfinite_b) -> None:
        self.parts.append({"means": means, "full": np.asarray(full, dtype=np.float64) if full else None,
                           "positions": np.asarray(lengths, dtype=np.int64),
                           "first_divergence": np.asarray(divergence, dtype=np.int64),
                           "widths": np.asarray(widths, dtype=np.int64)})
        self.prompts += len(divergence)
        self.nonfinite[0] += nonfinite_a
        self.nonfinite[1] += nonfinite_b

    def _column(self, name: str, dtype) -> np.ndarray:
        return np.concatenate([part[name] for part in self.parts]).astype(dtype, copy=False) if self.parts \
            else np.zeros(0, dtype)

    def result(self):
        """(per-prompt arrays, summary)."""
        means = np.concatenate([part["means"] for part in self.parts]) if self.parts \
            else np.zeros((0, len(POSITION_METRICS)))
        per = {name: np.ascontiguousarray(means[:, i]) for i, name in enumerate(POSITION_METRICS)}
        has_full = any(part["full"] is not None for part in self.parts)
        if has_full:
            full = np.concatenate([part["full"] if part["full"] is not None else np.full((len(part["positions"]), 2), np.nan)
                                   for part in self.parts])
            has_full = bool(np.isfinite(full[:, 1]).any())
            per["full_prob_cos_first"], per["full_kl_first"] = full[:, 0].copy(), full[:, 1].copy()
            if not has_full:
                del per["full_prob_cos_first"], per["full_kl_first"]
        per["positions"] = self._column("positions", np.int64)
        per["first_divergence"] = self._column("first_divergence", np.int64)
        widths = self._column("widths", np.int64)
        # A prompt with no compared position (a run that stopped at once) has NaN metrics and is
        # left out of the means; if no prompt has a position, the summary is NaN and gates fail.
        compared = per["positions"] > 0
        summary: dict[str, float | int | None] = {
            name: float(np.mean(per[name][compared])) if compared.any() else float("nan") for name in POSITION_METRICS
        }
        summary["prompts_compared"] = int(compared.sum())
        if has_full:
            summary.update({name: float(np.nanmean(per[name])) for name in ("full_prob_cos_first", "full_kl_first")})
        diverged = per["first_divergence"][per["first_divergence"] >= 0]
        summary["first_divergence"] = int(diverged.min()) if len(diverged) else None
        summary["diverged_prompts"] = len(diverged)
        summary["positions"] = int(per["positions"].sum())
        summary["top_k"] = int(widths[widths > 0].min()) if (widths > 0).any() else 0
        summary["nonfinite_a"], summary["nonfinite_b"] = self.nonfinite
        return per, summary

    def detail(self) -> dict[str, list]:
        """KL and top-1 agreement at the compared positions (the first DETAIL_LIMIT), columnar."""
        if not self.detail_order:
            return {name: [] for name in self.detail_lists}
        prompt, position = (np.concatenate(column) for column in zip(*self.detail_order))
        # Stacked records come in order; records of several shapes are measured a shape at a time.
        in_order = ((prompt[1:] > prompt[:-1]) | ((prompt[1:] == prompt[:-1]) & (position[1:] > position[:-1]))).all()
        if in_order:
            return {name: list(values) for name, values in self.detail_lists.items()}
        order = np.lexsort((position, prompt)).tolist()
        return {name: [values[i] for i in order] for name, values in self.detail_lists.items()}


def logprob_metrics(records_a: list[dict], records_b: list[dict], forced: bool):
    """Per-prompt metric arrays and the summary for two runs' records of the same prompts."""
    comparison = LogprobComparison(forced)
    comparison.add(records_a, records_b)
    return comparison.result()


def position_detail(records_a: list[dict], records_b: list[dict], forced: bool) -> dict[str, list]:
    """KL and top-1 agreement at every compared position, columnar: what a report plots."""
    comparison = LogprobComparison(forced)
    comparison.add(records_a, records_b)
    return comparison.detail()

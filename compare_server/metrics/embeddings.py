"""Embedding metrics (DESIGN.md "Metrics"): pure functions on [N, D] arrays, vectorised over prompts.

With â = a/‖a‖ for each prompt's embedding:

    cos = â·b̂     mse = mean((â-b̂)²)     max_abs = max|â-b̂|
    error_rate = (1 - mean cos) x 100 %           (the reports' "精度误差率")
    sim_pearson = Pearson r of the upper triangles of ÂÂᵀ and B̂B̂ᵀ
    neighbour_overlap = mean |kNN_A(i) ∩ kNN_B(i)| / k

    per_prompt, summary = embedding_metrics(a, b)
    summary["cos_min"], summary["error_rate"]
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import ThreadpoolController

from compare_server.metrics.kernels import _kernels

# The similarity-matrix metrics cost O(N² D) and the element histogram O(N D) on top of the
# per-prompt metrics; past this many prompts both use an evenly spaced sample (512 prompts give
# 130,816 similarity pairs), so a 10,000-prompt diff costs little more than reading it. The
# summary and the histogram say how many prompts they used.
SIMILARITY_SAMPLE = 512
SAMPLE_ELEMENTS = 4 * 1024 * 1024
NEIGHBOURS = 5
# Element errors are binned finely on [0, 2] (|â - b̂| <= 2), then regrouped into the bins asked for.
HISTOGRAM_FINE_BINS = 1 << 16


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as a new float64 array (a zero row becomes NaN, which the gates
    catch)."""
    x = np.array(x, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        x /= np.sqrt(np.einsum("nd,nd->n", x, x))[:, None]
    return x


def row_metrics(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cos, mse, max_abs) of each row pair: the compiled kernel for float32 records, else numpy."""
    if _kernels is not None and a.dtype == b.dtype == np.float32 and a.ndim == 2:
        cos, mse, max_abs = np.empty(len(a)), np.empty(len(a)), np.empty(len(a))
        _kernels.embed_rows(a, b, cos, mse, max_abs)
        return cos, mse, max_abs
    return row_metrics_numpy(a, b)


def row_metrics_numpy(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference for the kernel: the definitions, written out in numpy."""
    an, bn = normalise(a), normalise(b)
    cos = np.einsum("nd,nd->n", an, bn)
    diff = np.subtract(an, bn, out=an)
    mse = np.einsum("nd,nd->n", diff, diff) / a.shape[1]
    return cos, mse, np.abs(diff, out=diff).max(axis=1)


def sim_pearson(an: np.ndarray, bn: np.ndarray) -> float:
    """Pearson r between the upper triangles (off-diagonal) of the two cosine-similarity matrices."""
    return _similarity_pearson(_similarity(an), _similarity(bn))


def _similarity_pearson(sa: np.ndarray, sb: np.ndarray) -> float:
    # The matrices are symmetric, so the upper triangle's sums are half the off-diagonal sums:
    # no index arrays over N² entries.
    n = sa.shape[0]
    if n < 3:
        return float("nan")
    m = n * (n - 1) / 2

    def upper(x: np.ndarray) -> float:
        return (float(x.sum(dtype=np.float64)) - float(np.trace(x, dtype=np.float64))) / 2

    sum_a, sum_b = upper(sa), upper(sb)
    cov = upper(sa * sb) - sum_a * sum_b / m
    var_a, var_b = upper(sa * sa) - sum_a ** 2 / m, upper(sb * sb) - sum_b ** 2 / m
    return cov / np.sqrt(var_a * var_b) if var_a > 0 and var_b > 0 else float("nan")


def _similarity(x: np.ndarray) -> np.ndarray:
    # float32 halves the cost of the N x N products; cosine similarities need no more.
    x32 = x.astype(np.float32, copy=False)
    return x32 @ x32.T


def neighbour_overlap(an: np.ndarray, bn: np.ndarray, k: int = NEIGHBOURS) -> float:
    """Mean fraction of each prompt's k nearest neighbours (by cosine, excluding itself) shared by A and B."""
    sa, sb = _similarity(an), _similarity(bn)
    k = min(k, len(sa) - 1)
    return _neighbour_overlap(_neighbours(sa, k), _neighbours(sb, k), k)


def _neighbours(s: np.ndarray, k: int) -> np.ndarray | None:
    """[n, n] booleans: row i marks prompt i's k nearest neighbours by similarity s, itself excluded
    (None for k < 1)."""
    n = s.shape[0]
    if k < 1:
        return None
    s = np.nan_to_num(s, nan=-np.inf)
    np.fill_diagonal(s, -np.inf)
    # A prompt's k nearest neighbours are those at or above its k-th largest similarity: one
    # partition per row finds that value, and no index sort is needed.
    near = s >= np.partition(s, n - k, axis=1)[:, n - k, None]
    if not (near.sum(axis=1) == k).all():  # ties at the k-th value: take k of them, as an index partition does
        near[:] = False
        np.put_along_axis(near, np.argpartition(-s, k - 1, axis=1)[:, :k], True, axis=1)
    return near


def _neighbour_overlap(near_a: np.ndarray | None, near_b: np.ndarray | None, k: int) -> float:
    if near_a is None or near_b is None:
        return float("nan")
    return float(np.count_nonzero(near_a & near_b) / (len(near_a) * k))


def _similarity_side(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray | None]:
    s = _similarity(x)
    return s, _neighbours(s, k)


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


def _similarity_sides(an: np.ndarray, bn: np.ndarray, k: int):
    """_similarity_side of both runs, one on each of two threads (the products and partitions release
    the GIL), each product on its own thread: 4.2 ms for 512 prompts against 5.4 ms one after the
    other with OpenBLAS's own threads, which then spin for ~0.1 s and slow whatever runs next."""
    with _blas().limit(limits=1, user_api="blas"), ThreadPoolExecutor(1) as pool:
        side_a = pool.submit(_similarity_side, an, k)
        side_b = _similarity_side(bn, k)
        return side_a.result(), side_b


def sample_indexes(n: int, dim: int) -> np.ndarray:
    """Evenly spaced prompts for the similarity-matrix metrics: all of them up to SIMILARITY_SAMPLE,
    and never more than SAMPLE_ELEMENTS values per run, so memory stays bounded for wide embeddings."""
    rows = max(16, min(SIMILARITY_SAMPLE, SAMPLE_ELEMENTS // max(dim, 1)))
    if n <= rows:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, rows).round().astype(np.int64))


class EmbeddingComparison:
    """An embedding diff accumulated chunk by chunk, prompts in order: runs of any size are compared
    without holding them in memory; per-prompt values do not depend on the chunk size.

        comparison = EmbeddingComparison(n_prompts)
        for a, b in chunks:                     # [n, D] arrays
            comparison.add(a, b)
        per_prompt, summary = comparison.result()
        comparison.histogram()                  # element errors |â - b̂|

    add() runs while the next chunk is read from the store by another thread, so it does little
    beyond the compiled row kernel (which releases the GIL): the sampled prompts are kept as they
    came and normalised, histogrammed and multiplied once, at the end.
    """

    def __init__(self, n_prompts: int):
        self.n = n_prompts
        self.per: dict[str, list[np.ndarray]] = {"cos": [], "mse": [], "max_abs": []}
        self.sample: np.ndarray | None = None
        self.sampled_a: list[np.ndarray] = []
        self.sampled_b: list[np.ndarray] = []
        self.offset = 0
        self.dim = 0
        self.nonfinite = [0, 0]
        # Set by _finish_sample, once every chunk is in:
        self._normalised: tuple[np.ndarray, np.ndarray] | None = None
        self._fine = np.zeros(HISTOGRAM_FINE_BINS, np.int64)
        self._max_error = 0.0
        self._histogram_prompts = 0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        if a.shape != b.shape or (self.dim and a.shape[1] != self.dim):
            raise ValueError(f"embedding shapes differ: {list(a.shape)} vs {list(b.shape)}")
        if self.sample is None:
            self.dim = a.shape[1]
            self.sample = sample_indexes(self.n, self.dim)
        lo, hi = np.searchsorted(self.sample, (self.offset, self.offset + len(a)))
        local = self.sample[lo:hi] - self.offset
        self.sampled_a.append(a[local])  # copies: the chunk's record bytes are not kept
        self.sampled_b.append(b[local])
        self.offset += len(a)
        cos, mse, max_abs = row_metrics(a, b)
        self.per["cos"].append(cos)
        self.per["mse"].append(mse)
        self.per["max_abs"].append(max_abs)
        # A NaN or infinity anywhere in a row (or a zero row) makes its cosine NaN: only then are
        # the values counted.
        if not np.isfinite(cos.sum()):
            suspect = ~np.isfinite(cos)
            self.nonfinite[0] += int(np.count_nonzero(~np.isfinite(a[suspect])))
            self.nonfinite[1] += int(np.count_nonzero(~np.isfinite(b[suspect])))

    def _finish_sample(self) -> None:
        """Normalises the sampled prompts (float32, for the similarity products) and bins their
        element errors: in one compiled pass, or in numpy a block of rows at a time so that wide
        embeddings need little memory."""
        if self._normalised is not None:
            return
        raw_a = np.concatenate(self.sampled_a or [np.empty((0, self.dim), np.float32)])
        raw_b = np.concatenate(self.sampled_b or [np.empty((0, self.dim), np.float32)])
        self.sampled_a, self.sampled_b = [], []  # the raw rows are in raw_a, raw_b now
        an, bn = np.empty(raw_a.shape, np.float32), np.empty(raw_b.shape, np.float32)
        if _kernels is not None and raw_a.dtype == raw_b.dtype == np.float32:  # 1.5 ms against 3.5 for 512 x 768
            self._max_error, self._histogram_prompts = _kernels.sample_rows(raw_a, raw_b, an, bn, self._fine)
            self._normalised = an, bn
            return
        block = max(1, (1 << 18) // max(self.dim, 1))
        for start in range(0, len(raw_a), block):
            rows = slice(start, start + block)
            a, b = normalise(raw_a[rows]), normalise(raw_b[rows])
            an[rows], bn[rows] = a, b
            errors = np.abs(np.subtract(a, b, out=a), out=a)
            finite = np.isfinite(errors)
            if not finite.all():
                self._histogram_prompts += int(finite.any(axis=1).sum())
                errors = errors[finite]
            else:
                self._histogram_prompts += len(errors)
            if errors.size:
                self._max_error = max(self._max_error, float(errors.max()))
                # |â - b̂| <= 2, so each error's fine bin is a scaled truncation: bincount, not histogram.
                bins = np.minimum((errors.ravel() * (HISTOGRAM_FINE_BINS / 2.0)).astype(np.intp), HISTOGRAM_FINE_BINS - 1)
                self._fine += np.bincount(bins, minlength=HISTOGRAM_FINE_BINS)
        self._normalised = an, bn

    def result(self) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        per = {name: np.concatenate(parts) for name, parts in self.per.items()}
        self._finish_sample()
        an, bn = self._normalised
        k = min(NEIGHBOURS, len(an) - 1)
        (sa, near_a), (sb, near_b) = _similarity_sides(an, bn, k)
        cos = per["cos"]
        summary = {
            "cos_mean": float(cos.mean()),
            "cos_min": float(cos.min()),
            "mse_mean": float(per["mse"].mean()),
            "max_abs_mean": float(per["max_abs"].mean()),
            "max_abs_max": float(per["max_abs"].max()),
            "error_rate": float((1.0 - cos.mean()) * 100.0),
            "sim_pearson": _similarity_pearson(sa, sb),
            "neighbour_overlap": _neighbour_overlap(near_a, near_b, k),
            "similarity_prompts": int(len(sa)),
            "nonfinite_a": self.nonfinite[0],
            "nonfinite_b": self.nonfinite[1],
        }
        return per, summary

    def histogram(self, bins: int = 30) -> dict[str, list]:
        """The element errors of the sampled prompts (all of them up to SIMILARITY_SAMPLE) in `bins`
        equal bins from 0 to the largest of those errors; `prompts` says how many were counted
        (those with at least one finite error)."""
        self._finish_sample()
        width = 2.0 / HISTOGRAM_FINE_BINS
        used = max(1, int(np.ceil(self._max_error / width)))
        group = int(np.ceil(used / bins))
        counts = [int(self._fine[i:i + group].sum()) for i in range(0, used, group)]
        edges = [i * width for i in range(0, used, group)] + [min(used, len(counts) * group) * width]
        return {"edges": edges, "counts": counts, "prompts": self._histogram_prompts}


def embedding_metrics(a: np.ndarray, b: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per-prompt arrays and the summary for two [N, D] embedding matrices of the same prompts."""
    if a.shape != b.shape:
        raise ValueError(f"embedding shapes differ: {list(a.shape)} vs {list(b.shape)}")
    comparison = EmbeddingComparison(len(a))
    comparison.add(a, b)
    return comparison.result()


def error_histogram(a: np.ndarray, b: np.ndarray, bins: int = 30) -> dict[str, list]:
    """Histogram of every element's |â - b̂|: what a report plots to show how errors spread."""
    comparison = EmbeddingComparison(len(a))
    comparison.add(a, b)
    return comparison.histogram(bins)

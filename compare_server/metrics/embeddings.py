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

import numpy as np

# The similarity-matrix metrics cost O(N² D); past this many prompts they use an evenly spaced
# sample, so a 10,000-prompt diff stays fast and small. The summary says how many were used.
SIMILARITY_SAMPLE = 1024
SAMPLE_ELEMENTS = 4 * 1024 * 1024
NEIGHBOURS = 5
# Element errors are binned finely on [0, 2] (|â - b̂| <= 2) as chunks arrive, then regrouped.
HISTOGRAM_FINE_BINS = 1 << 16


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, in float64 (a zero row becomes NaN, which the gates catch)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def sim_pearson(an: np.ndarray, bn: np.ndarray) -> float:
    """Pearson r between the upper triangles (off-diagonal) of the two cosine-similarity matrices.

    The matrices are symmetric, so the upper triangle's sums are half the off-diagonal sums:
    no index arrays over N² entries.
    """
    n = an.shape[0]
    if n < 3:
        return float("nan")
    sa, sb = _similarity(an), _similarity(bn)
    m = n * (n - 1) / 2

    def upper(x: np.ndarray) -> float:
        return (float(x.sum(dtype=np.float64)) - float(np.trace(x, dtype=np.float64))) / 2

    sum_a, sum_b = upper(sa), upper(sb)
    cov = upper(sa * sb) - sum_a * sum_b / m
    var_a, var_b = upper(sa * sa) - sum_a ** 2 / m, upper(sb * sb) - sum_b ** 2 / m
    return cov / np.sqrt(var_a * var_b) if var_a > 0 and var_b > 0 else float("nan")


def _similarity(x: np.ndarray) -> np.ndarray:
    # float32 halves the cost of the N x N products; cosine similarities need no more.
    x32 = x.astype(np.float32)
    return x32 @ x32.T


def neighbour_overlap(an: np.ndarray, bn: np.ndarray, k: int = NEIGHBOURS) -> float:
    """Mean fraction of each prompt's k nearest neighbours (by cosine, excluding itself) shared by A and B."""
    n = an.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return float("nan")

    def knn(x: np.ndarray) -> np.ndarray:
        s = _similarity(x)
        np.fill_diagonal(s, -np.inf)
        s = np.nan_to_num(s, nan=-np.inf)
        return np.argpartition(-s, k - 1, axis=1)[:, :k]

    na, nb = knn(an), knn(bn)
    shared = (na[:, :, None] == nb[:, None, :]).any(axis=2).sum(axis=1)
    return float(shared.mean() / k)


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
        self.fine = np.zeros(HISTOGRAM_FINE_BINS, np.int64)
        self.max_error = 0.0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        if a.shape != b.shape or (self.dim and a.shape[1] != self.dim):
            raise ValueError(f"embedding shapes differ: {list(a.shape)} vs {list(b.shape)}")
        if self.sample is None:
            self.dim = a.shape[1]
            self.sample = sample_indexes(self.n, self.dim)
        an, bn = normalise(a), normalise(b)
        diff = an - bn
        self.per["cos"].append(np.einsum("nd,nd->n", an, bn))
        self.per["mse"].append(np.einsum("nd,nd->n", diff, diff) / a.shape[1])
        errors = np.abs(diff, out=diff)
        self.per["max_abs"].append(errors.max(axis=1))
        bad_a, bad_b = int(np.count_nonzero(~np.isfinite(a))), int(np.count_nonzero(~np.isfinite(b)))
        self.nonfinite[0] += bad_a
        self.nonfinite[1] += bad_b
        if bad_a or bad_b:
            errors = errors[np.isfinite(errors)]
        if errors.size:
            self.max_error = max(self.max_error, float(errors.max()))
            # |â - b̂| <= 2, so the bin of each error is a scaled truncation: bincount, not histogram.
            bins = np.minimum((errors.ravel() * (HISTOGRAM_FINE_BINS / 2.0)).astype(np.int64), HISTOGRAM_FINE_BINS - 1)
            self.fine += np.bincount(bins, minlength=HISTOGRAM_FINE_BINS)
        local = self.sample[(self.sample >= self.offset) & (self.sample < self.offset + len(a))] - self.offset
        self.sampled_a.append(an[local].astype(np.float32))  # the similarity metrics work in float32
        self.sampled_b.append(bn[local].astype(np.float32))
        self.offset += len(a)

    def result(self) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        per = {name: np.concatenate(parts) for name, parts in self.per.items()}
        an, bn = np.concatenate(self.sampled_a), np.concatenate(self.sampled_b)
        cos = per["cos"]
        summary = {
            "cos_mean": float(cos.mean()),
            "cos_min": float(cos.min()),
            "mse_mean": float(per["mse"].mean()),
            "max_abs_mean": float(per["max_abs"].mean()),
            "max_abs_max": float(per["max_abs"].max()),
            "error_rate": float((1.0 - cos.mean()) * 100.0),
            "sim_pearson": sim_pearson(an, bn),
            "neighbour_overlap": neighbour_overlap(an, bn),
            "similarity_prompts": int(len(an)),
            "nonfinite_a": self.nonfinite[0],
            "nonfinite_b": self.nonfinite[1],
        }
        return per, summary

    def histogram(self, bins: int = 30) -> dict[str, list]:
        """The element errors in `bins` equal bins from 0 to the largest error seen."""
        width = 2.0 / HISTOGRAM_FINE_BINS
        used = max(1, int(np.ceil(self.max_error / width)))
        group = int(np.ceil(used / bins))
        counts = [int(self.fine[i:i + group].sum()) for i in range(0, used, group)]
        edges = [i * width for i in range(0, used, group)] + [min(used, len(counts) * group) * width]
        return {"edges": edges, "counts": counts}


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

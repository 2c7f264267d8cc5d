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
SIMILARITY_SAMPLE = 2048
NEIGHBOURS = 5


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, in float64 (a zero row becomes NaN, which the gates catch)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def per_prompt_metrics(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """cos, mse and max_abs for each prompt: a and b are [N, D]."""
    an, bn = normalise(a), normalise(b)
    diff = an - bn
    return {
        "cos": np.einsum("nd,nd->n", an, bn),
        "mse": np.einsum("nd,nd->n", diff, diff) / a.shape[1],
        "max_abs": np.abs(diff).max(axis=1),
    }


def sim_pearson(an: np.ndarray, bn: np.ndarray) -> float:
    """Pearson r between the upper triangles (off-diagonal) of the two cosine-similarity matrices."""
    n = an.shape[0]
    if n < 3:
        return float("nan")
    iu = np.triu_indices(n, k=1)
    sa, sb = (an @ an.T)[iu], (bn @ bn.T)[iu]
    sa, sb = sa - sa.mean(), sb - sb.mean()
    denom = np.sqrt((sa * sa).sum() * (sb * sb).sum())
    return float((sa * sb).sum() / denom) if denom > 0 else float("nan")


def neighbour_overlap(an: np.ndarray, bn: np.ndarray, k: int = NEIGHBOURS) -> float:
    """Mean fraction of each prompt's k nearest neighbours (by cosine, excluding itself) shared by A and B."""
    n = an.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return float("nan")

    def knn(x: np.ndarray) -> np.ndarray:
        s = x @ x.T
        np.fill_diagonal(s, -np.inf)
        s = np.nan_to_num(s, nan=-np.inf)
        return np.argpartition(-s, k - 1, axis=1)[:, :k]

    na, nb = knn(an), knn(bn)
    shared = (na[:, :, None] == nb[:, None, :]).any(axis=2).sum(axis=1)
    return float(shared.mean() / k)


def _sample(n: int) -> np.ndarray:
    if n <= SIMILARITY_SAMPLE:
        return np.arange(n)
    return np.linspace(0, n - 1, SIMILARITY_SAMPLE).round().astype(np.int64)


def embedding_metrics(a: np.ndarray, b: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per-prompt arrays and the summary for two [N, D] embedding matrices of the same prompts."""
    if a.shape != b.shape:
        raise ValueError(f"embedding shapes differ: {list(a.shape)} vs {list(b.shape)}")
    per = per_prompt_metrics(a, b)
    idx = _sample(a.shape[0])
    an, bn = normalise(a[idx]), normalise(b[idx])
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
        "similarity_prompts": int(len(idx)),
        "nonfinite_a": int(np.count_nonzero(~np.isfinite(a))),
        "nonfinite_b": int(np.count_nonzero(~np.isfinite(b))),
    }
    return per, summary


def error_histogram(a: np.ndarray, b: np.ndarray, bins: int = 30) -> dict[str, list]:
    """Histogram of every element's |â - b̂|: what a report plots to show how errors spread."""
    errors = np.abs(normalise(a) - normalise(b)).ravel()
    errors = errors[np.isfinite(errors)]
    top = float(errors.max()) if errors.size else 1.0
    counts, edges = np.histogram(errors, bins=bins, range=(0.0, top if top > 0 else 1.0))
    return {"edges": edges.tolist(), "counts": counts.tolist()}

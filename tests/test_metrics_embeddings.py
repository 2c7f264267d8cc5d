"""Embedding metrics agree with independent computations from their plain definitions and scipy."""

import numpy as np
import pytest
from scipy.spatial.distance import cosine
from scipy.stats import pearsonr

from compare_server.metrics.embeddings import embedding_metrics, neighbour_overlap, normalise


@pytest.fixture
def pair():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(12, 32)).astype(np.float32)
    b = (a + rng.normal(scale=0.05, size=a.shape)).astype(np.float32)
    return a, b


def test_per_prompt_cos_mse_and_max_abs_match_their_definitions(pair):
    a, b = pair
    per, _ = embedding_metrics(a, b)
    for i in range(len(a)):
        an, bn = a[i] / np.linalg.norm(a[i]), b[i] / np.linalg.norm(b[i])
        assert per["cos"][i] == pytest.approx(1 - cosine(a[i].astype(np.float64), b[i].astype(np.float64)), abs=1e-12)
        assert per["mse"][i] == pytest.approx(np.mean((an - bn) ** 2), rel=1e-6)
        assert per["max_abs"][i] == pytest.approx(np.max(np.abs(an - bn)), rel=1e-6)


def test_summary_aggregates_and_error_rate_follow_the_reports(pair):
    a, b = pair
    per, s = embedding_metrics(a, b)
    assert s["cos_mean"] == pytest.approx(per["cos"].mean())
    assert s["cos_min"] == pytest.approx(per["cos"].min())
    assert s["error_rate"] == pytest.approx((1 - per["cos"].mean()) * 100)


def test_sim_pearson_is_pearson_r_of_the_similarity_upper_triangles(pair):
    a, b = pair
    _, s = embedding_metrics(a, b)
    an, bn = normalise(a), normalise(b)
    iu = np.triu_indices(len(a), k=1)
    expected = pearsonr((an @ an.T)[iu], (bn @ bn.T)[iu]).statistic
    assert s["sim_pearson"] == pytest.approx(expected, abs=1e-6)  # similarities are float32 products


def test_neighbour_overlap_matches_a_brute_force_count(pair):
    a, b = pair
    k = 3
    an, bn = normalise(a), normalise(b)

    def knn(x, i):
        sims = [(float(x[i] @ x[j]), j) for j in range(len(x)) if j != i]
        return {j for _, j in sorted(sims, reverse=True)[:k]}

    expected = np.mean([len(knn(an, i) & knn(bn, i)) / k for i in range(len(a))])
    assert neighbour_overlap(an, bn, k) == pytest.approx(expected)


def test_a_diff_summary_finds_the_same_neighbours_and_leaves_blas_threads_as_they_were(pair):
    from threadpoolctl import threadpool_info

    from compare_server.metrics.embeddings import NEIGHBOURS

    a, b = pair
    threads = [lib["num_threads"] for lib in threadpool_info()]
    _, s = embedding_metrics(a, b)  # the two runs' similarity products run on two threads
    assert s["neighbour_overlap"] == neighbour_overlap(normalise(a), normalise(b), NEIGHBOURS)
    assert [lib["num_threads"] for lib in threadpool_info()] == threads


def test_neighbour_overlap_counts_k_neighbours_when_several_tie_for_the_kth(pair):
    a, b = pair
    twins = np.concatenate([np.repeat(a[:1], 6, axis=0), a[1:]])  # six identical prompts: their neighbours tie
    an, bn = normalise(twins), normalise(np.concatenate([np.repeat(b[:1], 6, axis=0), b[1:]]))
    assert neighbour_overlap(an, an, 3) == 1.0
    assert 0.0 <= neighbour_overlap(an, bn, 3) <= 1.0


def test_identical_embeddings_are_perfect_and_scaling_does_not_matter(pair):
    a, _ = pair
    _, s = embedding_metrics(a, a * 3.0)
    assert s["cos_min"] == pytest.approx(1.0) and s["max_abs_mean"] < 1e-6
    assert s["sim_pearson"] == pytest.approx(1.0) and s["neighbour_overlap"] == 1.0


def test_a_nan_embedding_is_counted_and_drags_cos_min_to_nan(pair):
    a, b = pair
    b = b.copy()
    b[2, 5] = np.nan
    _, s = embedding_metrics(a, b)
    assert s["nonfinite_b"] == 1
    assert np.isnan(s["cos_min"])


def test_mismatched_shapes_are_refused(pair):
    a, b = pair
    with pytest.raises(ValueError, match="shapes differ"):
        embedding_metrics(a, b[:, :16])


def test_chunked_accumulation_gives_the_same_per_prompt_values_and_summary(pair):
    from compare_server.metrics.embeddings import EmbeddingComparison

    a, b = pair
    whole = EmbeddingComparison(len(a))
    whole.add(a, b)
    parts = EmbeddingComparison(len(a))
    for start in range(0, len(a), 5):
        parts.add(a[start:start + 5], b[start:start + 5])
    (pw, sw), (pp, sp) = whole.result(), parts.result()
    for name in pw:
        np.testing.assert_allclose(pw[name], pp[name], rtol=1e-12)
    assert sw == pytest.approx(sp, rel=1e-12) and whole.histogram() == parts.histogram()


def test_the_error_histogram_counts_every_element_up_to_the_largest_error(pair):
    from compare_server.metrics.embeddings import error_histogram

    a, b = pair
    h = error_histogram(a, b, bins=10)
    errors = np.abs(normalise(a) - normalise(b))
    assert sum(h["counts"]) == errors.size and len(h["counts"]) <= 10
    assert h["edges"][0] == 0.0 and h["edges"][-1] >= errors.max() and h["prompts"] == len(a)


def test_a_large_run_histograms_the_elements_of_an_evenly_spaced_sample_of_prompts():
    from compare_server.metrics.embeddings import SIMILARITY_SAMPLE, EmbeddingComparison, sample_indexes

    rng = np.random.default_rng(3)
    a = rng.normal(size=(3000, 16)).astype(np.float32)
    b = (a + rng.normal(scale=1e-3, size=a.shape)).astype(np.float32)
    comparison = EmbeddingComparison(len(a))
    for start in range(0, len(a), 256):
        comparison.add(a[start:start + 256], b[start:start + 256])
    h = comparison.histogram(bins=10)
    sample = sample_indexes(len(a), 16)
    assert h["prompts"] == len(sample) == SIMILARITY_SAMPLE and sum(h["counts"]) == len(sample) * 16
    assert h["edges"][-1] >= np.abs(normalise(a[sample]) - normalise(b[sample])).max()


def test_wide_embeddings_use_a_bounded_similarity_sample():
    from compare_server.metrics.embeddings import SAMPLE_ELEMENTS, sample_indexes

    assert len(sample_indexes(10_000, 768)) == 512
    wide = sample_indexes(4096, 65536)
    assert len(wide) * 65536 <= SAMPLE_ELEMENTS and wide[0] == 0 and wide[-1] == 4095

"""The compiled metric kernels give the numpy reference's values: on random data, on ties, on
disjoint and identical top-k sets, and on NaN, infinities and zero rows. `make test` builds them,
so a missing kernel is a failure here, not a silent fall back to numpy."""

import os
import subprocess
import sys

import numpy as np
import pytest

from compare_server.metrics.embeddings import row_metrics, row_metrics_numpy
from compare_server.metrics.kernels import _kernels
from compare_server.metrics.logprobs import (POSITION_METRICS, Positions, measure_positions, position_metrics,
                                             position_metrics_numpy)


def test_the_kernels_were_built_by_the_install():
    assert _kernels is not None, "compare_server/metrics/_kernels.c was not compiled: run `make install`"


def _embedding_pair(rng, n=64, d=300):
    a = rng.normal(size=(n, d)).astype(np.float32)
    return a, (a + rng.normal(scale=3e-3, size=a.shape)).astype(np.float32)


def test_embedding_rows_match_the_numpy_reference_including_nan_inf_and_zero_rows():
    a, b = _embedding_pair(np.random.default_rng(0))
    b[3, 7], b[4, 0], a[5] = np.nan, np.inf, 0.0
    b[6] = a[6]  # identical rows: cos 1, errors 0
    cos, mse, max_abs = row_metrics(a, b)
    ref_cos, ref_mse, ref_max = row_metrics_numpy(a, b)
    for got, want in ((cos, ref_cos), (mse, ref_mse), (max_abs, ref_max)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)  # NaN where the reference has NaN
    assert np.isnan(cos[[3, 4, 5]]).all() and cos[6] == pytest.approx(1.0, abs=1e-15) and max_abs[6] == 0.0


def test_embedding_rows_read_strided_views_of_record_bytes():
    from proto.codec import decode_stacked, encode

    a, b = _embedding_pair(np.random.default_rng(1), n=20)
    va = decode_stacked([encode({"embedding": row}) for row in a], "embed")["embedding"]
    vb = decode_stacked([encode({"embedding": row}) for row in b], "embed")["embedding"]
    assert va.strides[0] != a.strides[0]  # each row sits after its record's header
    for got, want in zip(row_metrics(va, vb), row_metrics_numpy(a, b)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def _topk(logprobs: np.ndarray, k: int):
    order = np.argsort(-logprobs, axis=1, kind="stable")[:, :k]
    return order.astype(np.int64), np.take_along_axis(logprobs, order, 1).astype(np.float32)


def _positions(ids_a, lp_a, ids_b, lp_b) -> Positions:
    return Positions.of_rows(ids_a, lp_a, ids_b, lp_b)


def _assert_same(pos: Positions):
    got, want = position_metrics(pos), position_metrics_numpy(pos)
    for name in POSITION_METRICS:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("k", [1, 2, 5, 20, 32, 33, 64])  # ids are matched one way up to 32, another past it
def test_positions_match_the_numpy_reference_on_random_distributions(k):
    rng = np.random.default_rng(k)
    logits = rng.normal(scale=3.0, size=(500, 60))
    la = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    lb = la + rng.normal(scale=0.3, size=la.shape)  # top-k sets overlap partly
    _assert_same(_positions(*_topk(la, k), *_topk(lb, k)))


@pytest.mark.parametrize("k", [8, 20])  # 20, the agents' default, runs a copy of the kernel built for it
def test_positions_match_on_ties_identical_sets_disjoint_sets_and_bad_values(k):
    rng = np.random.default_rng(9)
    ids = np.arange(k, dtype=np.int64)[None].repeat(6, 0)
    tied = np.full((6, k), np.log(0.05), np.float32)  # every candidate equally likely
    lp = np.sort(np.log(rng.dirichlet(np.ones(30), size=6)[:, :k]).astype(np.float32), axis=1)[:, ::-1].copy()
    rows = [
        (ids, tied, ids, tied),                            # identical and all tied
        (ids, lp, ids, lp),                                # identical
        (ids, lp, ids + 100, lp),                          # disjoint: every id filled in
        (ids, lp, ids[:, ::-1].copy(), tied),              # same ids, other order, ties on one side
        (ids, lp, np.where(ids == 1, 0, ids), lp),         # an id listed twice (bad input)
        (np.where(ids == 1, 0, ids), lp, np.where(ids == 1, 0, ids), lp),  # the same ids, one listed twice
        (ids, lp, np.roll(ids, 1, axis=1), lp),            # the same ids, every one moved
        (np.where(ids == 1, 0, ids), lp, ids + 3, lp),
    ]
    bad = lp.copy()
    bad[1, 3], bad[2, 0], bad[3, 7] = np.nan, np.inf, -np.inf  # -inf is probability 0, not bad
    rows.append((ids, lp, ids, bad))
    for row in rows:
        _assert_same(_positions(*row))
    got = position_metrics(_positions(ids, lp, ids, bad))
    assert np.isnan(got["kl"][[1, 2]]).all() and np.isfinite(got["kl"][3]) and got["top1_match"][1] == 1.0


@pytest.mark.parametrize("k", [12, 20])
def test_positions_match_the_numpy_reference_from_certainty_down_to_underflow(k):
    """The kernel's own exp and log (vectorised, unlike libm's) against numpy's over the whole range
    logprobs take: near 0, ordinary, far below EPS, where e^x is subnormal (-708 to -745), where it
    underflows to 0, -inf, and positive values a broken model might send."""
    rng = np.random.default_rng(21)
    scales = np.array([1e-7, 1e-3, 0.1, 1.0, 5.0, 30.0, 100.0, 300.0, 700.0])
    la = -np.abs(rng.normal(size=(900, k))) * rng.choice(scales, size=(900, 1))
    la[::7, 3] = rng.uniform(-760, -700, size=len(la[::7]))
    la[::11, 5] = -np.inf
    la[::13, 0] = rng.uniform(0.0, 3.0, size=len(la[::13]))
    lb = la + rng.normal(scale=1e-3, size=la.shape)
    lb[::5] = la[::5]  # identical positions: every distance exactly 0 up to rounding
    ids = np.tile(np.arange(k, dtype=np.int64), (900, 1))
    lp_a, lp_b = (-np.sort(-x, axis=1).astype(np.float32) for x in (la, lb))
    _assert_same(_positions(ids, lp_a, ids, lp_b))


def test_the_portable_code_gives_the_numpy_values_where_avx2_would_run():
    """Where the CPU has AVX2, the kernel's hottest loop runs hand-vectorised code; CMP_KERNELS=portable
    turns it off. The reference checks above, run again that way, cover the code other CPUs run."""
    env = {**os.environ, "CMP_KERNELS": "portable"}
    isa = subprocess.run([sys.executable, "-c", "from compare_server.metrics import _kernels; print(_kernels.ISA)"],
                         capture_output=True, text=True, env=env, check=True)
    assert isa.stdout.strip() == "portable"
    checks = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                             "match_the_numpy_reference or match_on_ties or low_32_bits"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert checks.returncode == 0, checks.stdout[-3000:]
    assert " passed" in checks.stdout and " failed" not in checks.stdout


def test_ids_equal_in_their_low_32_bits_are_still_different_ids():
    """Ids are compared on their low 32 bits first: an id and id + 2^32 must not match."""
    rng = np.random.default_rng(3)
    k = 10
    logits = rng.normal(scale=2.0, size=(200, 40))
    la = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    (ids_a, lp_a), (ids_b, lp_b) = _topk(la, k), _topk(la + rng.normal(scale=0.2, size=la.shape), k)
    high = ids_b + (1 << 32) * (rng.random(ids_b.shape) < 0.3)  # same low bits, another id
    _assert_same(_positions(ids_a, lp_a, high, lp_b))
    got = position_metrics(_positions(ids_a, lp_a, ids_a + (1 << 32), lp_a))
    assert (got["topk_overlap"] == 0).all() and (got["top1_match"] == 0).all()


def test_positions_read_blocks_of_record_bytes_up_to_each_prompts_count():
    """The diff hands the kernel a chunk's records as strided [n, T, K] views of their bytes, and
    compares only each prompt's first counts[i] positions (greedy: up to the first divergence)."""
    from proto.codec import decode_stacked, encode

    rng = np.random.default_rng(5)
    n, t, k = 40, 7, 5
    logits = rng.normal(scale=3.0, size=(n * t, 30))
    la = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    (ids_a, lp_a), (ids_b, lp_b) = _topk(la, k), _topk(la + rng.normal(scale=0.3, size=la.shape), k)

    def block(ids, lp):
        records = [encode({"token_ids": ids[i * t:(i + 1) * t, 0], "token_logprobs": lp[i * t:(i + 1) * t, 0],
                           "topk_ids": ids[i * t:(i + 1) * t], "topk_logprobs": lp[i * t:(i + 1) * t]}) for i in range(n)]
        stacked = decode_stacked(records, "logprobs")
        return stacked["topk_ids"], stacked["topk_logprobs"]

    counts = rng.integers(0, t + 1, size=n)
    pos = Positions(counts, *block(ids_a, lp_a), *block(ids_b, lp_b))
    assert pos.ids_a.strides[0] != t * k * 8  # each record's rows sit after its header
    got = position_metrics(pos)
    kept = (np.arange(t) < counts[:, None]).ravel()
    want = position_metrics_numpy(_positions(ids_a[kept], lp_a[kept], ids_b[kept], lp_b[kept]))
    for name in POSITION_METRICS:
        assert len(got[name]) == counts.sum()
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_positions_shared_among_threads_give_the_single_thread_values_means_and_counts():
    """A large chunk's blocks are shared among the kernel's threads, each taking the next few:
    blocks with nothing to compare and uneven blocks must not shift a row, and each block's means
    and the NaN and out-of-order counts must add up the same."""
    rng = np.random.default_rng(11)
    n, t, k = 800, 40, 6
    logits = rng.normal(scale=3.0, size=(n * t, 25))
    la = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    (ids_a, lp_a), (ids_b, lp_b) = _topk(la, k), _topk(la + rng.normal(scale=0.3, size=la.shape), k)
    lp_b[rng.integers(0, n * t, size=30), 2] = np.nan
    counts = rng.integers(0, t + 1, size=n)
    counts[:20] = 0
    pos = Positions(counts, *(x.reshape(n, t, k) for x in (ids_a, lp_a, ids_b, lp_b)))
    assert counts.sum() > 3 * 4096  # enough rows for several threads
    one = measure_positions(pos, threads=1)
    assert one.nonfinite == (0, 30) and one.unsorted > 0
    for threads in (2, 3, 5):
        split = measure_positions(pos, threads=threads)
        assert (split.unsorted, split.nonfinite) == (one.unsorted, one.nonfinite)
        for name in POSITION_METRICS:
            np.testing.assert_array_equal(split.values[name], one.values[name], err_msg=f"{name}, {threads} threads")
            np.testing.assert_array_equal(split.means[name], one.means[name], err_msg=f"{name}, {threads} threads")


def test_the_position_kernel_refuses_a_thread_count_out_of_range():
    x = np.zeros((1, 1, 2), np.int64), np.zeros((1, 1, 2), np.float32)
    for threads in (0, 65):
        with pytest.raises(ValueError, match="threads must be 1 to 64"):
            _kernels.position_rows(*x, *x, np.ones(1, np.int64), np.empty((1, 8)), np.empty((1, 8)), threads)


def _stored_pair(forced: bool, shuffled: bool, n=30, t=6, k=8):
    """Two runs' records of n prompts as the store hands them over (codec.stack): B's scores are
    A's plus noise, and in greedy decoding some of B's prompts chose another token part-way."""
    from proto.codec import encode, stack

    rng = np.random.default_rng(17)
    logits = rng.normal(scale=3.0, size=(n * t, 40))
    la = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    (ids_a, lp_a), (ids_b, lp_b) = _topk(la, k), _topk(la + rng.normal(scale=0.3, size=la.shape), k)
    if shuffled:
        ids_b[7], lp_b[7] = ids_b[7][::-1], lp_b[7][::-1]
    tokens_a = ids_a[:, 0].reshape(n, t)
    tokens_b = tokens_a.copy()
    if not forced:
        tokens_b[3, 2], tokens_b[11, 0], tokens_b[12, t - 1] = -1, -1, -1

    def stacked(ids, lp, tokens):
        return stack([encode({"token_ids": tokens[i], "token_logprobs": lp[i * t:(i + 1) * t, 0],
                              "topk_ids": ids[i * t:(i + 1) * t], "topk_logprobs": lp[i * t:(i + 1) * t]})
                      for i in range(n)], "logprobs")

    return stacked(ids_a, lp_a, tokens_a), stacked(ids_b, lp_b, tokens_b)


@pytest.mark.parametrize("forced", [True, False])
@pytest.mark.parametrize("shuffled", [False, True])
def test_a_diff_without_the_compiled_kernels_gives_the_same_metrics(monkeypatch, forced, shuffled):
    """Where cmp was installed without a C compiler, the numpy code stands in for the kernel that
    reads stored records where they are, in a whole diff: divergences, per-prompt means, and rows
    out of order sent back to be sorted."""
    from compare_server.metrics import logprobs

    a, b = _stored_pair(forced, shuffled)

    def diff():
        comparison = logprobs.LogprobComparison(forced=forced)
        comparison.add(a, b)
        return (*comparison.result(), comparison.detail())

    per_kernel, summary_kernel, detail_kernel = diff()
    monkeypatch.setattr(logprobs, "_kernels", None)
    per_numpy, summary_numpy, detail_numpy = diff()
    for name in per_numpy:
        np.testing.assert_allclose(per_kernel[name], per_numpy[name], rtol=1e-9, atol=1e-12, err_msg=name)
    assert summary_kernel.keys() == summary_numpy.keys()
    for name, value in summary_numpy.items():
        assert summary_kernel[name] == (value if value is None else pytest.approx(value, rel=1e-9, abs=1e-12)), name
    for name, values in detail_numpy.items():
        assert detail_kernel[name] == pytest.approx(values, rel=1e-9, abs=1e-12), name
    if not forced:
        assert per_kernel["first_divergence"][[3, 11, 12]].tolist() == [2, 0, 5]
        assert per_kernel["positions"][[3, 11, 12, 0]].tolist() == [3, 1, 6, 6]


def test_stored_records_shared_among_threads_give_the_single_thread_values():
    from compare_server.metrics.logprobs import measure_stacked

    a, b = _stored_pair(forced=False, shuffled=True, n=400, t=40, k=6)
    divergence, lengths, one = measure_stacked(a, b, forced=False, threads=1)
    assert one.unsorted > 0 and lengths.sum() > 3 * 4096
    for threads in (2, 3):
        got = measure_stacked(a, b, forced=False, threads=threads)
        np.testing.assert_array_equal(got[0], divergence)
        np.testing.assert_array_equal(got[1], lengths)
        np.testing.assert_array_equal(got[2].rows, one.rows)
        np.testing.assert_array_equal(got[2].block_means, one.block_means)
        assert (got[2].unsorted, got[2].nonfinite) == (one.unsorted, one.nonfinite)


def test_the_record_kernel_refuses_records_too_short_for_their_layout_and_what_is_not_bytes():
    a, b = _stored_pair(forced=True, shuffled=False, n=3)
    counts, divergence, out, means = np.empty(3, np.int64), np.empty(3, np.int64), np.empty((18, 8)), np.empty((3, 8))
    layout = tuple(a.tensors[name][2] for name in ("token_ids", "topk_ids", "topk_logprobs"))
    short = list(b.blobs[:2]) + [b.blobs[2][:-1]]
    with pytest.raises(ValueError, match="record 2 is too short for its layout"):
        _kernels.stacked_rows(a.blobs, short, layout, layout, 6, 8, True, counts, divergence, out, means, 1)
    with pytest.raises(TypeError, match="record 1 is not bytes"):
        _kernels.stacked_rows(a.blobs, [b.blobs[0], "text", b.blobs[2]], layout, layout, 6, 8, True, counts,
                              divergence, out, means, 1)
    _kernels.stacked_rows(a.blobs, b.blobs, layout, layout, 6, 8, True, counts, divergence, out, means, 1)
    assert counts.tolist() == [6, 6, 6] and divergence.tolist() == [-1, -1, -1]


def test_the_similarity_sample_is_normalised_and_histogrammed_as_numpy_does_it(monkeypatch):
    """The sampled prompts' unit rows (for the similarity metrics) and element-error histogram
    come from one compiled pass; numpy's blockwise code gives the same rows, counts and largest
    error, NaN, infinite and zero rows included."""
    from compare_server.metrics import embeddings

    a, b = _embedding_pair(np.random.default_rng(4), n=300, d=200)
    b[3, 7], b[4, 0], a[5] = np.nan, np.inf, 0.0

    def sample():
        comparison = embeddings.EmbeddingComparison(len(a))
        comparison.add(a, b)
        comparison.result()
        return comparison._normalised, comparison.histogram(bins=40)

    (an, bn), histogram = sample()
    monkeypatch.setattr(embeddings, "_kernels", None)
    (an_ref, bn_ref), histogram_ref = sample()
    np.testing.assert_allclose(an, an_ref, rtol=2e-7)  # sums in another order: at most a float32 ulp
    np.testing.assert_allclose(bn, bn_ref, rtol=2e-7)
    # A NaN or a zero row leaves no finite error; an infinity leaves its row's other elements finite.
    assert histogram["prompts"] == histogram_ref["prompts"] == 298 and histogram["edges"] == histogram_ref["edges"]
    counts, counts_ref = np.array(histogram["counts"]), np.array(histogram_ref["counts"])
    assert counts.sum() == counts_ref.sum() and np.abs(counts - counts_ref).sum() <= 2  # an error on a bin edge

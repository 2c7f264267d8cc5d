"""Logprob metrics: the top-k approximation is exact at K = vocabulary size, follows DESIGN.md's
fill rule for missing ids, and compares the right positions in greedy and forced modes."""

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import log_softmax, rel_entr
from scipy.stats import spearmanr

from compare_server.metrics.logprobs import logprob_metrics, union_distributions


def _record(logprobs: np.ndarray, k: int, tokens=None) -> dict:
    """A record from full [T, V] logprobs: top-k sorted descending, greedy tokens by default."""
    order = np.argsort(-logprobs, axis=1)[:, :k]
    top = np.take_along_axis(logprobs, order, 1)
    tokens = order[:, 0] if tokens is None else np.asarray(tokens)
    return {
        "token_ids": tokens.astype(np.int64),
        "token_logprobs": logprobs[np.arange(len(tokens)), tokens].astype(np.float32),
        "topk_ids": order.astype(np.int64),
        "topk_logprobs": top.astype(np.float32),
    }


@pytest.fixture
def full_pair():
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=3.0, size=(5, 40))
    la = log_softmax(logits, axis=1).astype(np.float32)
    lb = log_softmax(logits + rng.normal(scale=0.05, size=logits.shape), axis=1).astype(np.float32)
    return la, lb


def test_with_k_equal_to_the_vocabulary_every_metric_is_the_full_distribution_metric(full_pair):
    la, lb = full_pair
    v = la.shape[1]
    tokens = np.argmax(la, axis=1)  # the same scored tokens in both: all positions compared
    per, s = logprob_metrics([_record(la, v, tokens)], [_record(lb, v, tokens)], forced=True)
    pa, pb = np.exp(la.astype(np.float64)), np.exp(lb.astype(np.float64))
    pa, pb = pa / pa.sum(1, keepdims=True), pb / pb.sum(1, keepdims=True)
    cos = np.mean([(x @ y) / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(pa, pb)])
    kl = np.mean([rel_entr(x, y).sum() for x, y in zip(pa, pb)])
    js = np.mean([jensenshannon(x, y) ** 2 for x, y in zip(pa, pb)])
    rho = np.mean([spearmanr(x, y).statistic for x, y in zip(pa, pb)])
    mae = np.mean([np.abs(x - y).sum() / (v + 1) for x, y in zip(pa, pb)])
    assert s["prob_cos"] == pytest.approx(cos, abs=1e-6)
    assert s["kl"] == pytest.approx(kl, rel=1e-3, abs=1e-7)
    assert s["js"] == pytest.approx(js, rel=1e-3, abs=1e-7)
    assert s["spearman"] == pytest.approx(rho, abs=1e-9)
    assert s["mae"] == pytest.approx(mae, rel=1e-3)
    assert s["topk_overlap"] == 1.0
    assert s["top1_match"] == pytest.approx(np.mean(np.argmax(la, 1) == np.argmax(lb, 1)))


def test_an_id_missing_from_a_top_k_gets_the_smaller_of_the_kth_probability_and_its_share_of_the_rest():
    # A's top-2 is {0: 0.5, 1: 0.3}, left-over 0.2; B's top-2 is {0: 0.6, 2: 0.1}, left-over 0.3.
    ids_a, ids_b = np.array([[0, 1]]), np.array([[0, 2]])
    lp_a, lp_b = np.log([[0.5, 0.3]]), np.log([[0.6, 0.1]])
    pa, pb, valid, tail_a, tail_b = union_distributions(ids_a, lp_a, ids_b, lp_b)
    # Columns: A's ids (0, 1), then B's ids (0 = duplicate, invalid; 2).
    assert valid.tolist() == [[True, True, False, True]]
    # id 2 is missing from A: min(0.3, 0.2 / 1) = 0.2. id 1 is missing from B: min(0.1, 0.3 / 1) = 0.1.
    assert pa[0].tolist() == pytest.approx([0.5, 0.3, 0.0, 0.2])
    assert pb[0].tolist() == pytest.approx([0.6, 0.1, 0.0, 0.1])
    assert tail_a[0] == pytest.approx(0.0) and tail_b[0] == pytest.approx(0.2)


def test_greedy_compares_up_to_and_including_the_first_divergence(full_pair):
    la, _ = full_pair
    a = _record(la, 8)
    b = _record(la, 8, tokens=np.r_[a["token_ids"][:2], a["token_ids"][2] + 1, a["token_ids"][3:]])
    per, s = logprob_metrics([a], [b], forced=False)
    assert per["positions"][0] == 3 and s["first_divergence"] == 2 and s["diverged_prompts"] == 1
    per, s = logprob_metrics([a], [b], forced=True)
    assert per["positions"][0] == 5


def test_identical_runs_are_perfect(full_pair):
    la, _ = full_pair
    per, s = logprob_metrics([_record(la, 5)], [_record(la, 5)], forced=False)
    assert s["top1_match"] == 1.0 and s["topk_overlap"] == 1.0
    assert s["prob_cos"] == pytest.approx(1.0) and s["kl"] == pytest.approx(0.0, abs=1e-12)
    assert s["spearman"] == pytest.approx(1.0) and s["first_divergence"] is None


def test_runs_with_different_k_are_compared_on_the_smaller_k(full_pair):
    la, lb = full_pair
    _, s = logprob_metrics([_record(la, 20)], [_record(lb, 5)], forced=False)
    assert s["top_k"] == 5


def test_full_vocab_first_position_metrics_are_exact(full_pair):
    la, lb = full_pair
    a = {**_record(la, 5), "full_logprobs": la[0]}
    b = {**_record(lb, 5), "full_logprobs": lb[0]}
    _, s = logprob_metrics([a], [b], forced=False)
    pa, pb = np.exp(la[0].astype(np.float64)), np.exp(lb[0].astype(np.float64))
    assert s["full_kl_first"] == pytest.approx(rel_entr(pa, pb).sum(), rel=1e-4)


def test_a_prompt_without_positions_is_left_out_of_the_means(full_pair):
    la, lb = full_pair
    empty = {"token_ids": np.zeros(0, np.int64), "token_logprobs": np.zeros(0, np.float32),
             "topk_ids": np.zeros((0, 0), np.int64), "topk_logprobs": np.zeros((0, 0), np.float32)}
    per, s = logprob_metrics([_record(la, 6), _record(la, 6)], [_record(lb, 6), empty], forced=False)
    assert per["positions"].tolist()[1] == 0 and np.isnan(per["kl"][1])
    assert s["prompts_compared"] == 1 and s["kl"] == pytest.approx(per["kl"][0])


def test_results_do_not_depend_on_how_the_prompts_are_chunked(full_pair):
    from compare_server.metrics.logprobs import LogprobComparison

    la, lb = full_pair
    rng = np.random.default_rng(4)
    recs_a = [_record(la[rng.permutation(5)], 6) for _ in range(7)]
    recs_b = [_record(lb[rng.permutation(5)], 6) for _ in range(7)]
    whole = LogprobComparison(forced=False)
    whole.add(recs_a, recs_b)
    parts = LogprobComparison(forced=False)
    for start in (0, 3, 5):
        end = {0: 3, 3: 5, 5: 7}[start]
        parts.add(recs_a[start:end], recs_b[start:end])
    (pw, sw), (pp, sp) = whole.result(), parts.result()
    for name in pw:
        np.testing.assert_array_equal(pw[name], pp[name])
    assert sw == sp and whole.detail() == parts.detail()


@pytest.mark.parametrize("forced", [False, True])
@pytest.mark.parametrize("shuffled", [False, True])
def test_records_stacked_as_the_store_holds_them_give_the_results_of_records_decoded_one_by_one(full_pair, forced, shuffled):
    """The diff hands a chunk of records that share one header over as one strided block; greedy
    divergences (at the first position, later, never) and top-k lists out of order must come out
    as they do record by record."""
    from compare_server.metrics.logprobs import LogprobComparison
    from proto.codec import decode, decode_stacked, encode

    la, lb = full_pair
    rng = np.random.default_rng(8)
    orders = [rng.permutation(5) for _ in range(9)]
    recs_a, recs_b = [_record(la[o], 6) for o in orders], [_record(lb[o], 6) for o in orders]
    recs_b[0]["token_ids"] = recs_b[0]["token_ids"] + 1  # diverges at once
    recs_b[3]["token_ids"][2:] += 1  # diverges at the third position
    if shuffled:  # one record's candidates not sorted by probability: the block path must not assume it
        recs_b[4]["topk_ids"], recs_b[4]["topk_logprobs"] = recs_b[4]["topk_ids"][:, ::-1], recs_b[4]["topk_logprobs"][:, ::-1]
    blobs_a, blobs_b = [encode(r) for r in recs_a], [encode(r) for r in recs_b]
    block = LogprobComparison(forced)
    block.add(decode_stacked(blobs_a, "logprobs"), decode_stacked(blobs_b, "logprobs"))
    one_by_one = LogprobComparison(forced)
    one_by_one.add([decode(b) for b in blobs_a], [decode(b) for b in blobs_b])
    (pb, sb), (po, so) = block.result(), one_by_one.result()
    assert pb.keys() == po.keys() and sb.keys() == so.keys()
    for name in po:
        np.testing.assert_allclose(pb[name], po[name], rtol=1e-12, err_msg=name)
    assert sb == pytest.approx(so, rel=1e-12, nan_ok=True)
    detail_b, detail_o = block.detail(), one_by_one.detail()
    assert detail_b["prompt"] == detail_o["prompt"] and detail_b["position"] == detail_o["position"]
    np.testing.assert_allclose(detail_b["kl"], detail_o["kl"], rtol=1e-12)
    assert po["positions"][:4].tolist() == ([5, 5, 5, 5] if forced else [1, 5, 5, 3])


def test_spearman_ranks_ties_as_scipy_does():
    from scipy.stats import rankdata

    from compare_server.metrics.logprobs import _ranks

    x = np.array([[0.1, 0.3, 0.1, 0.5, 0.3, 0.2], [0.2, 0.2, 0.2, 0.9, 0.0, 0.4]])
    valid = np.array([[True] * 6, [True, True, True, True, False, True]])
    ranks = _ranks(x, valid)
    np.testing.assert_array_equal(ranks[0], rankdata(x[0]))
    np.testing.assert_array_equal(ranks[1][valid[1]], rankdata(x[1][valid[1]]))


def test_the_per_position_detail_lists_prompts_in_order_when_they_are_measured_by_top_k_width(full_pair):
    """Prompts of different top-k widths are measured a width at a time; a report still plots them
    prompt by prompt, position by position, each with its own KL."""
    from compare_server.metrics.logprobs import LogprobComparison, position_detail

    la, lb = full_pair
    widths = [6, 3, 6, 3, 4]
    recs_a = [_record(np.roll(la, i, axis=0), k) for i, k in enumerate(widths)]
    recs_b = [_record(np.roll(lb, i, axis=0), k) for i, k in enumerate(widths)]
    comparison = LogprobComparison(forced=True)
    comparison.add(recs_a, recs_b)
    detail = comparison.detail()
    assert detail["prompt"] == [p for p in range(5) for _ in range(5)]
    assert detail["position"] == list(range(5)) * 5
    for p in range(5):  # each prompt's values are those it has on its own
        alone = position_detail([recs_a[p]], [recs_b[p]], forced=True)
        assert detail["kl"][5 * p:5 * p + 5] == pytest.approx(alone["kl"], rel=1e-12)


def test_nan_and_inf_logprobs_are_counted_in_every_row_compared_or_not(full_pair):
    """The kernel counts each run's NaN and infinite logprobs for the diff's note, in all rows:
    also those after a greedy divergence, which are not compared."""
    from compare_server.metrics.logprobs import LogprobComparison
    from proto.codec import decode, decode_stacked, encode

    la, lb = full_pair
    recs_a = [_record(np.roll(la, i, axis=0), 6) for i in range(4)]
    recs_b = [_record(np.roll(lb, i, axis=0), 6) for i in range(4)]
    recs_b[1]["token_ids"][1:] += 1  # diverges at the second position: rows 2-4 are not compared
    recs_b[1]["topk_logprobs"][3, 2] = np.nan  # after the divergence
    recs_b[2]["topk_logprobs"][0, 5] = -np.inf
    recs_a[3]["topk_logprobs"][4, 0] = np.inf
    blobs_a, blobs_b = [encode(r) for r in recs_a], [encode(r) for r in recs_b]
    block = LogprobComparison(forced=False)
    block.add(decode_stacked(blobs_a, "logprobs"), decode_stacked(blobs_b, "logprobs"))
    one_by_one = LogprobComparison(forced=False)
    one_by_one.add([decode(b) for b in blobs_a], [decode(b) for b in blobs_b])
    (_, summary), (_, expected) = block.result(), one_by_one.result()
    assert (summary["nonfinite_a"], summary["nonfinite_b"]) == (expected["nonfinite_a"], expected["nonfinite_b"]) == (1, 2)

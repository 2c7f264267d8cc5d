"""Gates turn a summary into PASS or FAIL with the reports' defaults, and overrides are checked."""

import pytest

from compare_server.metrics.gates import GateError, evaluate_gates


def test_default_logprob_gates_are_those_of_the_pleias_report():
    pleias = {"top1_match": 1.0, "prob_cos": 0.999926, "kl": 0.00054, "spearman": 0.994}
    gates, verdict = evaluate_gates("logprobs", pleias)
    assert verdict == "PASS"
    assert {g["metric"]: (g["op"], g["threshold"]) for g in gates} == {
        "top1_match": (">=", 0.99), "prob_cos": (">=", 0.99), "kl": ("<", 0.01), "spearman": (">=", 0.95),
    }


def test_the_nomic_reports_embeddings_fail_the_default_cos_gate():
    gates, verdict = evaluate_gates("embed", {"cos_min": 0.8030})
    assert verdict == "FAIL" and gates[0]["passed"] is False


def test_an_override_tightens_a_gate_and_can_add_one_in_the_right_direction():
    summary = {"cos_min": 0.995, "mse_mean": 0.002}
    _, verdict = evaluate_gates("embed", summary, {"cos_min": 0.999})
    assert verdict == "FAIL"
    gates, verdict = evaluate_gates("embed", summary, {"mse_mean": 0.001})
    assert verdict == "FAIL" and gates[-1]["op"] == "<"


def test_a_missing_or_nan_metric_fails_its_gate():
    assert evaluate_gates("embed", {"cos_min": float("nan")})[1] == "FAIL"
    assert evaluate_gates("logprobs", {})[1] == "FAIL"


def test_gating_an_unknown_metric_is_an_error_that_lists_the_choices():
    with pytest.raises(GateError, match="cannot gate 'kl' on a embed diff: choose one of cos_mean"):
        evaluate_gates("embed", {}, {"kl": 0.1})

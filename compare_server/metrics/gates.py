"""Gates: thresholds on summary metrics that turn a diff into PASS or FAIL.

Defaults follow the Pleias report §7.4 (logprobs) and the embedding reports (cos ≥ 0.99).
Any summary metric can be gated; its direction is known, so an override is just a number:

    gates, verdict = evaluate_gates("embed", summary, {"cos_min": 0.999})
"""

from __future__ import annotations

import math

DEFAULT_GATES = {
    "embed": {"cos_min": 0.99},
    "logprobs": {"top1_match": 0.99, "prob_cos": 0.99, "kl": 0.01, "spearman": 0.95},
}

# Metrics where bigger is better pass with >=; the others (errors, divergences) pass with <.
HIGHER_IS_BETTER = {
    "embed": {"cos_mean", "cos_min", "sim_pearson", "neighbour_overlap"},
    "logprobs": {"top1_match", "topk_overlap", "prob_cos", "spearman", "full_prob_cos_first"},
}
LOWER_IS_BETTER = {
    "embed": {"mse_mean", "max_abs_mean", "max_abs_max", "error_rate"},
    "logprobs": {"kl", "js", "mae", "rel_err", "full_kl_first"},
}


class GateError(ValueError):
    """A threshold on a metric that cannot be gated."""


def gateable(kind: str) -> list[str]:
    return sorted(HIGHER_IS_BETTER[kind] | LOWER_IS_BETTER[kind])


def evaluate_gates(kind: str, summary: dict, overrides: dict[str, float] | None = None):
    """Returns ([{metric, op, threshold, value, passed}], "PASS" | "FAIL").

    A metric that is NaN or missing fails its gate: no number is not a pass.
    """
    thresholds = dict(DEFAULT_GATES[kind])
    for name, value in (overrides or {}).items():
        if name not in HIGHER_IS_BETTER[kind] | LOWER_IS_BETTER[kind]:
            raise GateError(f"cannot gate {name!r} on a {kind} diff: choose one of {', '.join(gateable(kind))}")
        thresholds[name] = float(value)
    gates = []
    for name, threshold in thresholds.items():
        value = summary.get(name)
        higher = name in HIGHER_IS_BETTER[kind]
        ok = value is not None and not math.isnan(value) and (value >= threshold if higher else value < threshold)
        gates.append({"metric": name, "op": ">=" if higher else "<", "threshold": threshold, "value": value, "passed": ok})
    return gates, "PASS" if all(g["passed"] for g in gates) else "FAIL"

"""History: how a model's accuracy (and speed) moved across CANN, vLLM-Ascend, vLLM and torch_npu.

    table = model_history(store, model="Pleias-RAG-350M", device="npu", baseline="cpu:float32")

One row per matching complete run, ordered by its versions (HISTORY_ORDER) then time, each
diffed against its baseline: a named run, or the newest complete run of the same model and
prompt set on the baseline device and dtype. A row is flagged as a regression when a headline
metric is worse than the previous row's by more than the tolerance.
"""

from __future__ import annotations

from compare_server.diff import cached_diff, check_comparable, with_gates
from compare_server.entities import RUN_COMPLETE, Run, RunFilter
from compare_server.errors import CannotCompare, InvalidInput
from compare_server.metrics import METRICS_VERSION
from compare_server.metrics.gates import HIGHER_IS_BETTER
from compare_server.runs import find_runs
from compare_server.versions import HISTORY_ORDER, version_key

HEADLINE = {"embed": ("cos_mean", "cos_min", "error_rate"), "logprobs": ("top1_match", "prob_cos", "kl", "spearman")}
# error_rate is cos_mean restated; it is shown but not checked twice.
CHECKED = {"embed": ("cos_mean", "cos_min"), "logprobs": ("top1_match", "prob_cos", "kl", "spearman")}
DEFAULT_TOLERANCE = 0.001
DTYPES = ("float32", "bfloat16", "float16")


def _error(kind: str, metric: str, value: float) -> float:
    """How far from perfect: 1 - value for similarities, the value itself for divergences."""
    return 1.0 - value if metric in HIGHER_IS_BETTER[kind] else value


def _device_matches(run: Run, device: str) -> bool:
    d = run.fingerprint["device"]
    return d == device or d.startswith(device + ":")


class Baselines:
    """Finds each run's baseline: a fixed run, or the newest complete DEVICE:DTYPE run of its model and prompts."""

    def __init__(self, store, spec: str):
        self.store, self.fixed, self.device, self.dtype = store, None, "", ""
        device, sep, dtype = spec.rpartition(":")
        if sep and dtype in DTYPES:  # "cpu:float32", "cuda:0:bfloat16"
            self.device, self.dtype = device, dtype
        else:
            self.fixed = store.get_run(spec)
        self._cache: dict[tuple[str, str], Run | None] = {}

    def describe(self) -> str:
        return self.fixed.id if self.fixed else f"{self.device}:{self.dtype}"

    def for_run(self, run: Run) -> Run | None:
        if self.fixed:
            return self.fixed
        key = (run.fingerprint["model_name"], run.prompt_set_digest)
        if key not in self._cache:
            candidates = [r for r in self.store.list_runs(filters=RunFilter(model=key[0], dtype=self.dtype, status=RUN_COMPLETE))
                          if r.prompt_set_digest == key[1] and _device_matches(r, self.device)]
            self._cache[key] = candidates[0] if candidates else None  # newest first
        return self._cache[key]


def history_order(run: Run) -> tuple:
    return (*(version_key(f, run.fingerprint[f]) for f in HISTORY_ORDER), run.created_at)


def model_history(store, model: str, device: str = "", baseline: str = "cpu:float32",
                  tolerance: float = DEFAULT_TOLERANCE, where: tuple = (), thresholds: dict | None = None) -> dict:
    """The history table as a JSON-ready dict: {model, baseline, tolerance, rows: [...]}."""
    if tolerance < 0:
        raise InvalidInput(f"--regression-tolerance {tolerance}: must be 0 or more")
    baselines = Baselines(store, baseline)
    runs = find_runs(store, RunFilter(model=model, device=device, status=RUN_COMPLETE, where=where))
    rows_runs = []
    for run in sorted(runs, key=history_order):
        base = baselines.for_run(run)
        if base is not None and base.id == run.id:
            continue  # a baseline is not a row of its own history
        rows_runs.append((run, base))
    cached = store.get_cached_diffs([(b.id, r.id) for r, b in rows_runs if b], METRICS_VERSION)
    perf = store.get_perf([r.id for r, _ in rows_runs])
    rows, previous = [], {}
    for run, base in rows_runs:
        row = {
            "run": run.id, "label": run.fingerprint["label"], "created": run.created_at.isoformat(timespec="seconds") + "Z",
            "device": run.fingerprint["device"], "dtype": run.fingerprint["dtype"], "backend": run.fingerprint["backend"],
            "versions": {f: run.fingerprint[f] for f in HISTORY_ORDER}, "baseline": base.id if base else None,
            "perf": perf.get(run.id, []),
        }
        try:
            if base is None:
                raise CannotCompare(f"no complete {baselines.describe()} run of {model} with these prompts")
            check_comparable(base, run)
            core = cached.get((base.id, run.id)) or cached_diff(store, base, run)
        except CannotCompare as e:
            rows.append({**row, "kind": run.kind, "error": str(e), "metrics": {}, "verdict": None, "change": {},
                         "regression": []})
            continue
        report = with_gates(core, thresholds, detail=False)
        kind = report["kind"]
        metrics = {m: report["summary"].get(m) for m in HEADLINE[kind]}
        prev = previous.get(kind)
        change = {m: (metrics[m] - prev[m]) if prev and None not in (metrics[m], prev.get(m)) else None for m in metrics}
        regression = [m for m in CHECKED[kind] if prev and metrics[m] is not None and prev.get(m) is not None
                      and _error(kind, m, metrics[m]) > _error(kind, m, prev[m]) + tolerance]
        rows.append({**row, "kind": kind, "metrics": metrics, "verdict": report["verdict"], "change": change,
                     "regression": regression, "error": None})
        previous[kind] = metrics
    return {"model": model, "device": device, "baseline": baselines.describe(), "tolerance": tolerance,
            "order": list(HISTORY_ORDER), "rows": rows}


def run_matrix(store, run_ids: list[str], metric: str = "") -> dict:
    """A headline metric for every ordered pair of runs (row = baseline, column = run)."""
    runs = [store.get_run(r) for r in run_ids]
    if len(runs) < 2:
        raise InvalidInput("cmp matrix needs at least two runs")
    kind = runs[0].kind
    metric = metric or HEADLINE[kind][1]  # cos_min, prob_cos
    cells: list[list[float | None]] = []
    for a in runs:
        line = []
        for b in runs:
            if a.id == b.id:
                line.append(None)
                continue
            try:
                check_comparable(a, b)
                line.append(cached_diff(store, a, b)["summary"].get(metric))
            except CannotCompare:
                line.append(None)
        cells.append(line)
    return {"metric": metric, "runs": [{"id": r.id, "device": r.fingerprint["device"], "dtype": r.fingerprint["dtype"],
                                        "label": r.fingerprint["label"], "backend": r.fingerprint["backend"]} for r in runs],
            "cells": cells}

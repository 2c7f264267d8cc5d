"""Rendering of diff reports and run listings as text tables, markdown or JSON (pure Python).

    print(render_diff(report, "table"))
"""

from __future__ import annotations

import json
import unicodedata

FORMATS = ("table", "json", "markdown", "html")


def _num(fmt: str):
    def render(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "no"
        return format(v, fmt)
    return render


def _short(n: int):
    def render(v) -> str:
        s = str(v).replace("\n", "\\n")
        if display_width(s) <= n:
            return s
        while display_width(s) > n - 1:
            s = s[:-1]
        return s + "…"
    return render


# (header, key, formatter) per kind; a report's per-prompt rows hold these keys.
PER_PROMPT_COLUMNS = {
    "embed": [
        ("#", "index", lambda v: str(v + 1)),
        ("prompt", "text", _short(44)),
        ("cos", "cos", _num(".6f")),
        ("mse", "mse", _num(".2e")),
        ("max_abs", "max_abs", _num(".6f")),
    ],
    "logprobs": [
        ("#", "index", lambda v: str(v + 1)),
        ("prompt", "text", _short(40)),
        ("pos", "positions", _num("d")),
        ("top1", "top1_match", _num(".3f")),
        ("overlap", "topk_overlap", _num(".3f")),
        ("prob_cos", "prob_cos", _num(".6f")),
        ("kl", "kl", _num(".5f")),
        ("js", "js", _num(".5f")),
        ("spearman", "spearman", _num(".3f")),
        ("diverges", "first_divergence", _num("d")),
    ],
}

SUMMARY_FORMATS = {
    "mse_mean": ".2e", "error_rate": ".4f", "first_divergence": "d", "diverged_prompts": "d",
    "positions": "d", "top_k": "d", "similarity_prompts": "d", "nonfinite_a": "d", "nonfinite_b": "d",
}


def display_width(s: str) -> int:
    """Terminal columns of s: CJK characters take two, so Chinese prompts keep the table aligned."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def text_table(headers: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max([display_width(h), *(display_width(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c + " " * (w - display_width(c)) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _run_line(run: dict) -> str:
    label = f" [{run['label']}]" if run.get("label") else ""
    return f"{run['id']}  {run['model']}  {run['device']} {run['dtype']}  {run['backend']}/{run['mode']}{label}"


def render_diff(report: dict, fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(report, indent=2, ensure_ascii=False)
    md = fmt == "markdown"
    cols = PER_PROMPT_COLUMNS[report["kind"]]
    rows = [[render(row.get(key)) for _, key, render in cols] for row in report["per_prompt"]]
    ps = report["prompt_set"]
    out = []
    head = [f"A (baseline): {_run_line(report['run_a'])}", f"B:            {_run_line(report['run_b'])}",
            f"prompt set:   {ps['name']} ({ps['count']} prompts, {ps['digest'][:12]})"]
    out.append("\n".join(("- " + h) if md else h for h in head))
    out.append(text_table([h for h, _, _ in cols], rows, md))
    summary_rows = [[k, _num(SUMMARY_FORMATS.get(k, ".6f"))(v)] for k, v in report["summary"].items()]
    out.append(("**Summary**\n\n" if md else "Summary\n") + text_table(["metric", "value"], summary_rows, md))
    gate_rows = [[g["metric"], f"{g['op']} {g['threshold']}", _num(".6f")(g["value"]), "PASS" if g["passed"] else "FAIL"]
                 for g in report["gates"]]
    out.append(("**Gates**\n\n" if md else "Gates\n") + text_table(["gate", "threshold", "value", "result"], gate_rows, md))
    for note in report.get("notes", []):
        out.append(("> " if md else "note: ") + note)
    out.append(f"**Verdict: {report['verdict']}**" if md else f"Verdict: {report['verdict']}")
    return "\n\n".join(out)


RUN_COLUMNS = [
    ("id", lambda r: r["id"]),
    ("label", lambda r: r["fingerprint"]["label"]),
    ("model", lambda r: r["fingerprint"]["model_name"]),
    ("device", lambda r: r["fingerprint"]["device"]),
    ("dtype", lambda r: r["fingerprint"]["dtype"]),
    ("mode", lambda r: r["fingerprint"]["mode"]),
    ("prompts", lambda r: f"{r['prompt_set']['name']} ({r['record_count']}/{r['prompt_set']['count']})"),
    ("status", lambda r: r["status"]),
    ("created", lambda r: r["created"]),
]


def render_runs(runs: list[dict]) -> str:
    if not runs:
        return "no runs stored yet: `cmp capture` makes one"
    return text_table([h for h, _ in RUN_COLUMNS], [[_short(32)(get(r)) for _, get in RUN_COLUMNS] for r in runs])


def render_run(run: dict) -> str:
    lines = [
        f"run {run['id']}  {run['status']}" + (f" ({run['status_reason']})" if run["status_reason"] else ""),
        f"created {run['created']}" + (f", closed {run['completed']}" if run["completed"] else ""),
        f"prompt set {run['prompt_set']['name']} ({run['prompt_set']['count']} prompts, {run['prompt_set']['digest']}), "
        f"{run['record_count']} records stored",
        "",
        "fingerprint",
    ]
    width = max(len(k) for k in run["fingerprint"])
    lines += [f"  {k.ljust(width)}  {v or '-'}" for k, v in run["fingerprint"].items()]
    if run.get("perf"):
        lines += ["", "speed (after warm-up)",
                  text_table(["batch", "calls", "ms/request", "p50 ms", "p95 ms", "p99 ms", "requests/s"],
                             [[str(p["batch_size"]), str(p["batches"]), f"{p['latency_ms']:.2f}", f"{p['p50_ms']:.2f}",
                               f"{p['p95_ms']:.2f}", f"{p['p99_ms']:.2f}", f"{p['throughput']:.1f}"] for p in run["perf"]])]
    if run["options"]:
        width = max(len(k) for k in run["options"])
        lines += ["", "options"] + [f"  {k.ljust(width)}  {v}" for k, v in sorted(run["options"].items())]
    return "\n".join(lines)


def _with_change(value, change, fmt: str) -> str:
    if value is None:
        return "-"
    text = format(value, fmt)
    return f"{text} ({change:+{fmt}})" if change else text


def _perf_cell(points: list[dict]) -> str:
    return ", ".join(f"bs{p['batch_size']} {p['throughput']:.1f}/s" for p in points) or "-"


def render_history(history: dict, fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(history, indent=2, ensure_ascii=False)
    if fmt == "html":
        from compare_server.html import history_page

        return history_page(history)
    md = fmt == "markdown"
    rows = history["rows"]
    head = (f"history of {history['model']}" + (f" on {history['device']}" if history["device"] else "")
            + f", baseline {history['baseline']}, regression tolerance {history['tolerance']}")
    if not rows:
        return head + "\n\nno complete runs match"
    metric_names = []
    for r in rows:
        metric_names += [m for m in r["metrics"] if m not in metric_names]
    headers = ["#", "run", *history["order"], "device", "dtype", *metric_names, "verdict", "speed", "flag"]
    table = []
    for i, r in enumerate(rows, 1):
        cells = [str(i), r["run"], *(r["versions"][f] or "-" for f in history["order"]), r["device"], r["dtype"]]
        cells += [_with_change(r["metrics"].get(m), r["change"].get(m), ".6f" if m != "error_rate" else ".4f")
                  for m in metric_names]
        flag = ("worse: " + ", ".join(r["regression"])) if r["regression"] else (r["error"] or "")
        cells += [r["verdict"] or "-", _perf_cell(r["perf"]), flag]
        table.append(cells)
    regressions = sum(1 for r in rows if r["regression"])
    tail = f"{len(rows)} runs, {regressions} flagged as regressions"
    return "\n\n".join([head, text_table(headers, table, md), tail])


def render_matrix(matrix: dict, fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(matrix, indent=2, ensure_ascii=False)
    names = [f"{r['id'][:8]} {r['device']} {r['dtype']}" for r in matrix["runs"]]
    rows = [[names[i], *("-" if v is None else f"{v:.6f}" for v in line)] for i, line in enumerate(matrix["cells"])]
    head = f"{matrix['metric']}: row = baseline, column = compared run"
    return head + "\n\n" + text_table(["baseline \\ run", *names], rows, fmt == "markdown")

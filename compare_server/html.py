"""Self-contained HTML pages: a diff report and a history, with inline SVG charts (no scripts,
no external files), so a page can be attached to a ticket or mailed as it is.

    html = report_page(report, run_a, run_b)   # report from diff_runs(..., detail=True)
    html = history_page(history)
"""

from __future__ import annotations

import html
import math

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1200px;color:#1d2330;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
.sub{color:#5b6474}.verdict{display:inline-block;padding:2px 10px;border-radius:4px;font-weight:600;color:#fff}
.PASS{background:#1f8a4c}.FAIL{background:#c0392b}
table{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{padding:3px 10px;border-bottom:1px solid #eceff4;text-align:left;vertical-align:top}td.num{white-space:nowrap}
th{background:#f5f7fa;font-weight:600}td.num{text-align:right}
tr.diff td{background:#fff4d6}tr.bad td{background:#fde8e6}.note{background:#eef4ff;border-left:3px solid #3b6fd8;padding:6px 10px;margin:6px 0}
svg{display:block;margin:6px 0}svg text{font:11px system-ui,sans-serif;fill:#1d2330}
.axis{stroke:#9aa3b2;stroke-width:1}.bar{fill:#3b6fd8}.bar.bad{fill:#c0392b}.line{fill:none;stroke-width:2}
"""
PALETTE = ("#3b6fd8", "#c0392b", "#1f8a4c", "#8e44ad", "#d68910", "#16a085")


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _fmt(v, digits: int = 6) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}"
    return str(v)


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


def _table(headers: list[str], rows: list[list[str]], row_classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, cells in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        tds = "".join(f'<td class="num">{_e(c)}</td>' if _is_num(c) else f"<td>{_e(c)}</td>" for c in cells)
        body.append(f"<tr{cls}>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _is_num(text: str) -> bool:
    try:
        float(str(text).split(" ")[0])
        return True
    except ValueError:
        return False


def bar_chart(labels: list[str], values: list[float | None], title: str, threshold: float | None = None,
              higher_is_better: bool = True, width: int = 1100, height: int = 220) -> str:
    """Vertical bars, one per label; bars on the wrong side of the threshold are red."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return f"<p class=sub>{_e(title)}: no values</p>"
    lo, hi = min(finite), max(finite)
    # The gate joins the scale only when it is near the bars; a gate far away would flatten them.
    near = threshold is not None and (threshold >= lo - (hi - lo) * 2 if higher_is_better else threshold <= hi * 2)
    if near:
        lo, hi = min(lo, threshold), max(hi, threshold)
    if higher_is_better:
        lo = lo - (hi - lo) * 0.1 if hi > lo else lo - 1e-6
    else:
        lo = 0.0
    hi = hi if hi > lo else lo + 1e-6
    left, bottom, top = 70, 30, 24
    plot_w, plot_h = width - left - 10, height - bottom - top
    step = plot_w / len(values)
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{_e(title)}">',
             f'<text x="{left}" y="14">{_e(title)}</text>',
             f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}"/>',
             f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}"/>',
             f'<text x="4" y="{top + 10}">{_e(_fmt(hi))}</text><text x="4" y="{top + plot_h}">{_e(_fmt(lo))}</text>']
    for i, (label, v) in enumerate(zip(labels, values)):
        if v is None or not math.isfinite(v):
            continue
        h = max(1.0, (v - lo) / (hi - lo) * plot_h)
        bad = threshold is not None and ((v < threshold) if higher_is_better else (v >= threshold))
        x = left + i * step + step * 0.15
        parts.append(f'<rect class="bar{" bad" if bad else ""}" x="{x:.1f}" y="{top + plot_h - h:.1f}" '
                     f'width="{step * 0.7:.1f}" height="{h:.1f}"><title>{_e(label)}: {_e(_fmt(v))}</title></rect>')
        if i % max(1, math.ceil(len(values) / 16)) == 0:  # at most 16 labels, so they never overlap
            parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 14}">{_e(label)}</text>')
    if threshold is not None and not near:
        parts.append(f'<text x="{left + plot_w - 260}" y="14">gate {_e(_fmt(threshold))}: every bar is on its good side</text>')
    if threshold is not None and near and lo <= threshold <= hi:
        y = top + plot_h - (threshold - lo) / (hi - lo) * plot_h
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#c0392b" stroke-dasharray="4 3"/>'
                     f'<text x="{left + plot_w - 90}" y="{y - 3:.1f}">gate {_e(_fmt(threshold))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(x_labels: list[str], series: dict[str, list[float | None]], title: str,
               width: int = 1100, height: int = 240) -> str:
    """One line per series over the same x positions (missing values leave gaps)."""
    finite = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    if not finite or not x_labels:
        return f"<p class=sub>{_e(title)}: no values</p>"
    lo, hi = min(finite), max(finite)
    if hi == lo:
        lo, hi = lo - 1e-6, hi + 1e-6
    left, bottom, top = 70, 34, 24
    plot_w, plot_h = width - left - 160, height - bottom - top
    n = len(x_labels)
    xs = [left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2) for i in range(n)]
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{_e(title)}">',
             f'<text x="{left}" y="14">{_e(title)}</text>',
             f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}"/>',
             f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}"/>',
             f'<text x="4" y="{top + 10}">{_e(_fmt(hi))}</text><text x="4" y="{top + plot_h}">{_e(_fmt(lo))}</text>']
    for i, label in enumerate(x_labels):
        if n <= 30 or i % max(1, n // 30) == 0:
            parts.append(f'<text x="{xs[i] - 10:.1f}" y="{top + plot_h + 14}">{_e(label)}</text>')
    for k, (name, values) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        points = [(xs[i], top + plot_h - (v - lo) / (hi - lo) * plot_h) for i, v in enumerate(values)
                  if v is not None and math.isfinite(v)]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(f'<polyline class="line" stroke="{color}" points="{path}"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in points]
        parts.append(f'<rect x="{left + plot_w + 12}" y="{top + 16 * k}" width="10" height="10" fill="{color}"/>'
                     f'<text x="{left + plot_w + 26}" y="{top + 9 + 16 * k}">{_e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _fingerprint_table(run_a: dict, run_b: dict) -> str:
    keys = list(run_a["fingerprint"]) + [k for k in run_b["fingerprint"] if k not in run_a["fingerprint"]]
    rows, classes = [], []
    for k in keys:
        va, vb = run_a["fingerprint"].get(k, ""), run_b["fingerprint"].get(k, "")
        rows.append([k, va or "-", vb or "-"])
        classes.append("diff" if va != vb else "")
    opts = sorted(set(run_a["options"]) | set(run_b["options"]))
    for k in opts:
        va, vb = run_a["options"].get(k, ""), run_b["options"].get(k, "")
        rows.append([f"option {k}", va or "-", vb or "-"])
        classes.append("diff" if va != vb else "")
    return _table(["field", f"A {run_a['id']}", f"B {run_b['id']}"], rows, classes)


def report_page(report: dict, run_a: dict, run_b: dict) -> str:
    """The diff of two runs as one page: verdict, gates, per-prompt table and bars, errors, fingerprints."""
    kind, s = report["kind"], report["summary"]
    a, b = report["run_a"], report["run_b"]
    title = f"cmp diff {a['id']} vs {b['id']}: {a['model']}"
    out = [f"<h1>{_e(a['model'])}: {_e(b['device'])} {_e(b['dtype'])} vs {_e(a['device'])} {_e(a['dtype'])} "
           f"<span class=\"verdict {report['verdict']}\">{report['verdict']}</span></h1>",
           f"<p class=sub>A (baseline) {_e(a['id'])} {_e(a['backend'])}/{_e(a['mode'])} {_e(a['label'])} · "
           f"B {_e(b['id'])} {_e(b['backend'])}/{_e(b['mode'])} {_e(b['label'])} · prompt set "
           f"{_e(report['prompt_set']['name'])} ({report['prompt_set']['count']} prompts, {_e(report['prompt_set']['digest'][:12])})</p>"]
    out += [f'<div class="note">{_e(n)}</div>' for n in report.get("notes", [])]
    out.append("<h2>Gates</h2>")
    out.append(_table(["gate", "threshold", "value", "result"],
                      [[g["metric"], f"{g['op']} {g['threshold']}", _fmt(g["value"]), "PASS" if g["passed"] else "FAIL"]
                       for g in report["gates"]], ["" if g["passed"] else "bad" for g in report["gates"]]))
    out.append("<h2>Summary</h2>")
    out.append(_table(["metric", "value"], [[k, _fmt(v)] for k, v in s.items()]))
    labels = [str(r["index"] + 1) for r in report["per_prompt"]]
    gate_of = {g["metric"]: g["threshold"] for g in report["gates"]}
    out.append("<h2>Per prompt</h2>")
    if kind == "embed":
        out.append(bar_chart(labels, [r["cos"] for r in report["per_prompt"]], "cosine per prompt",
                             threshold=gate_of.get("cos_min")))
        cols = ["cos", "mse", "max_abs"]
    else:
        out.append(bar_chart(labels, [r["kl"] for r in report["per_prompt"]], "KL(A‖B) per prompt (mean over positions)",
                             threshold=gate_of.get("kl"), higher_is_better=False))
        cols = ["positions", "top1_match", "topk_overlap", "prob_cos", "kl", "js", "spearman", "first_divergence"]
    rows = [[str(r["index"] + 1), r["id"], r["text"][:80], *(_fmt(r.get(c)) for c in cols)] for r in report["per_prompt"]]
    out.append(_table(["#", "id", "prompt", *cols], rows))
    detail = report.get("detail") or {}
    if "per_position" in detail:
        pp = detail["per_position"]
        out.append("<h2>KL at every compared position</h2>")
        out.append(bar_chart([f"{p + 1}.{t}" for p, t in zip(pp["prompt"], pp["position"])], pp["kl"],
                             "KL(A‖B) per position (prompt.position), in order", threshold=gate_of.get("kl"),
                             higher_is_better=False))
    if "error_histogram" in detail:
        h = detail["error_histogram"]
        centres = [f"{(lo + hi) / 2:.2g}" for lo, hi in zip(h["edges"][:-1], h["edges"][1:])]
        out.append("<h2>Element errors |â − b̂|</h2>")
        counted = report["prompt_set"]["count"]
        if h.get("prompts", counted) < counted:
            counted = f"an evenly spaced {h['prompts']} of {counted}"
        out.append(bar_chart(centres, [int(c) for c in h["counts"]],
                             f"number of embedding elements per error bin, over {counted} prompts",
                             higher_is_better=False))
    out.append("<h2>Fingerprints</h2><p class=sub>Rows that differ are highlighted.</p>")
    out.append(_fingerprint_table(run_a, run_b))
    return _page(title, "\n".join(out))


def history_page(history: dict) -> str:
    """A model's history: each headline metric and the speed across versions, and the table."""
    rows = history["rows"]
    labels = [r["versions"].get("cann") or r["versions"].get("vllm") or r["run"][:8] for r in rows]
    out = [f"<h1>History of {_e(history['model'])}</h1>",
           f"<p class=sub>{_e(history['device'] or 'all devices')} against baseline {_e(history['baseline'])}; "
           f"ordered by {', '.join(history['order'])}, then time; regression tolerance {history['tolerance']}</p>"]
    metric_names = []
    for r in rows:
        metric_names += [m for m in r["metrics"] if m not in metric_names]
    for m in metric_names:
        out.append(line_chart(labels, {m: [r["metrics"].get(m) for r in rows]}, f"{m} across versions"))
    sizes = sorted({p["batch_size"] for r in rows for p in r["perf"]})
    if sizes:
        series = {f"batch {bs}": [next((p["throughput"] for p in r["perf"] if p["batch_size"] == bs), None) for r in rows]
                  for bs in sizes}
        out.append(line_chart(labels, series, "throughput (requests/s) across versions"))
    table = [[str(i), r["run"], *(r["versions"][f] or "-" for f in history["order"]), r["device"], r["dtype"],
              *(_fmt(r["metrics"].get(m)) for m in metric_names), r["verdict"] or "-",
              ", ".join(r["regression"]) or (r["error"] or "")] for i, r in enumerate(rows, 1)]
    out.append("<h2>Runs</h2>")
    out.append(_table(["#", "run", *history["order"], "device", "dtype", *metric_names, "verdict", "worse"],
                      table, ["bad" if r["regression"] else "" for r in rows]))
    return _page(f"cmp history {history['model']}", "\n".join(out))

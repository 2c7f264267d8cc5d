"""`make bench` runs end to end at smoke sizes: every benchmark produces its figures and the table."""

import json
import subprocess
import sys

from conftest import ROOT


def test_the_benchmark_runs_every_part_at_smoke_sizes(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["smoke"] is True
    assert results["ingest"]["embed"]["ratio_to_floor"] > 0 and results["ingest"]["logprobs"]["records"] == 40
    assert results["diff"]["embed"]["ratio_to_read"] > 0 and results["diff"]["logprobs"]["diff_s"] > 0
    assert results["cli"]["heavy_imports"] == "[]"
    assert results["capture"]["ratio"] > 0 and results["memory"]["ingest_peak_rss_mb"] > 0
    assert results["history"]["runs"] == 12
    assert "cmp benchmark on" in proc.stdout and "ingest embed" in proc.stdout

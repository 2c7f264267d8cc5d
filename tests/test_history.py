"""`cmp history`, `cmp matrix` and the diff cache over runs with real records and chosen versions."""

import json
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from compare_server.metrics import METRICS_VERSION
from conftest import embed_run

PROMPTS = ["alpha", "beta", "gamma", "delta", "epsilon"]


@pytest.fixture
def upgrades(client):
    """A CPU baseline and NPU runs over CANN upgrades, captured out of order; 8.3.RC1 got worse."""
    rng = np.random.default_rng(5)
    base = rng.normal(size=(5, 32))

    def npu(noise, **fp):
        return embed_run(client, base + rng.normal(scale=noise, size=base.shape), PROMPTS, device="npu:0",
                         dtype="bfloat16", model_name="bge", **fp)

    runs = {"cpu": embed_run(client, base, PROMPTS, model_name="bge", label="cpu fp32")}
    runs["8.5.1"] = npu(0.001, cann="8.5.1", vllm_ascend="0.18.0")
    runs["8.0.RC1"] = npu(0.001, cann="8.0.RC1", vllm_ascend="0.9.2")
    runs["8.3.RC1"] = npu(0.05, cann="8.3.RC1", vllm_ascend="0.11.0")
    runs["8.0.0"] = npu(0.001, cann="8.0.0", vllm_ascend="0.9.2")
    return runs


def _history(server, *args):
    result = CliRunner().invoke(cli, ["history", "--server", server.address, "--model", "bge", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_rows_are_ordered_by_cann_version_and_diffed_against_the_cpu_baseline(server, upgrades):
    h = json.loads(_history(server, "--device", "npu", "--format", "json"))
    assert [r["versions"]["cann"] for r in h["rows"]] == ["8.0.RC1", "8.0.0", "8.3.RC1", "8.5.1"]
    assert {r["baseline"] for r in h["rows"]} == {upgrades["cpu"]}
    assert h["baseline"] == "cpu:float32"
    assert all(r["metrics"]["cos_min"] > 0.9 for r in h["rows"])


def test_a_version_that_got_worse_is_flagged_and_the_next_change_shows_the_recovery(server, upgrades):
    rows = json.loads(_history(server, "--device", "npu", "--format", "json"))["rows"]
    flagged = {r["versions"]["cann"]: r["regression"] for r in rows}
    assert flagged["8.3.RC1"] == ["cos_mean", "cos_min"]
    assert flagged["8.0.RC1"] == [] and flagged["8.0.0"] == [] and flagged["8.5.1"] == []
    assert rows[3]["change"]["cos_min"] > 0  # 8.5.1 recovered
    table = _history(server, "--device", "npu")
    assert "worse: cos_mean, cos_min" in table and "1 flagged as regressions" in table


def test_a_loose_tolerance_flags_nothing(server, upgrades):
    rows = json.loads(_history(server, "--device", "npu", "--regression-tolerance", "0.5", "--format", "json"))["rows"]
    assert not any(r["regression"] for r in rows)


def test_a_named_baseline_run_and_version_conditions(server, upgrades):
    h = json.loads(_history(server, "--baseline", upgrades["8.0.RC1"], "--where", "cann>=8.3.RC1", "--format", "json"))
    assert [r["run"] for r in h["rows"]] == [upgrades["8.3.RC1"], upgrades["8.5.1"]]
    assert h["baseline"] == upgrades["8.0.RC1"]


def test_without_a_baseline_rows_say_so(server, upgrades):
    rows = json.loads(_history(server, "--baseline", "cuda:bfloat16", "--format", "json"))["rows"]
    assert rows and all("no complete cuda:bfloat16 run of bge" in r["error"] for r in rows)


def test_history_as_markdown_and_html(server, upgrades):
    assert "| # | run | cann |" in _history(server, "--device", "npu", "--format", "markdown")
    page = _history(server, "--device", "npu", "--format", "html")
    assert page.startswith("<!DOCTYPE html>") and "cos_min across versions" in page and "<svg" in page


def test_matrix_shows_every_pair(server, upgrades):
    ids = [upgrades["cpu"], upgrades["8.0.RC1"], upgrades["8.3.RC1"]]
    out = json.loads(CliRunner().invoke(cli, ["matrix", "--server", server.address, "--format", "json", *ids]).output)
    cells = out["cells"]
    assert out["metric"] == "cos_min" and cells[0][0] is None
    assert cells[0][1] > cells[0][2]  # 8.0.RC1 is closer to the CPU than 8.3.RC1
    assert cells[0][1] == pytest.approx(cells[1][0], abs=1e-12)  # cosine is symmetric


def test_a_second_diff_is_a_cache_lookup_and_another_metrics_version_is_not(server, upgrades):
    a, b = upgrades["cpu"], upgrades["8.5.1"]
    first = json.loads(CliRunner().invoke(cli, ["diff", "--server", server.address, "--format", "json", a, b]).output)
    con = sqlite3.connect(server.db_path)
    (blob,) = con.execute("SELECT report_json FROM diff_cache WHERE run_a=? AND run_b=? AND metrics_version=?",
                          (a, b, METRICS_VERSION)).fetchone()
    cached = json.loads(blob)
    cached["summary"]["cos_min"] = 0.5  # if the next diff shows this, it was read, not recomputed
    con.execute("UPDATE diff_cache SET report_json=? WHERE run_a=? AND run_b=?", (json.dumps(cached), a, b))
    con.commit()
    second = json.loads(CliRunner().invoke(cli, ["diff", "--server", server.address, "--format", "json", a, b]).output)
    assert first["summary"]["cos_min"] > 0.99 and second["summary"]["cos_min"] == 0.5
    assert second["verdict"] == "FAIL"  # gates are evaluated on the cached metrics each time
    assert server.store.get_cached_diff(a, b, METRICS_VERSION + 1) is None


def test_report_writes_a_self_contained_page(server, upgrades, tmp_path):
    out = tmp_path / "r.html"
    result = CliRunner().invoke(cli, ["report", "--server", server.address, upgrades["cpu"], upgrades["8.3.RC1"], "-o", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "<svg" in page and "cosine per prompt" in page and "Element errors" in page
    assert 'class="diff"' in page  # fingerprint rows that differ (device, dtype, cann, ...) are highlighted
    assert "http://" not in page and "https://" not in page and "<script" not in page

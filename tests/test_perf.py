"""`cmp capture --perf`: latency, percentiles and throughput per batch size, stored with the run."""

import json

import pytest

from capture_agent.perf import PerfError, measure, parse_batch_sizes
from conftest import capture_run, run_cmp


def test_embedding_speed_is_measured_per_batch_size_and_shown(server, minilm_path):
    run_id = capture_run(server.address, "--model", minilm_path, "--mode", "embed", "--prompts", "nomic-11",
                         "--perf", "4,1")
    shown = json.loads(run_cmp("show", "--server", server.address, "--json", run_id).stdout)
    points = shown["perf"]
    assert [p["batch_size"] for p in points] == [1, 4]
    for p in points:
        assert p["batches"] >= 5 and 0 < p["p50_ms"] <= p["p95_ms"] <= p["p99_ms"]
        assert p["throughput"] == pytest.approx(1000.0 / p["latency_ms"], rel=1e-6)
    assert "requests/s" in run_cmp("show", "--server", server.address, run_id).stdout


def test_generation_speed_is_measured_with_batched_greedy_decoding(server, tiny_llama):
    run_id = capture_run(server.address, "--model", tiny_llama, "--mode", "logprobs", "--prompts", "qwen-11",
                         "--max-new-tokens", "4", "--top-k", "4", "--perf", "2")
    (point,) = json.loads(run_cmp("show", "--server", server.address, "--json", run_id).stdout)["perf"]
    assert point["batch_size"] == 2 and point["throughput"] > 0


def test_timings_follow_the_clock_and_the_batch_size():
    class Backend:
        calls = []

        def run_batch(self, texts):
            self.calls.append(len(texts))

    ticks = iter(range(0, 10_000, 1))  # each clock read advances 1 s: every call takes 1 s
    backend = Backend()
    (point,) = measure(backend, ["a", "b", "c"], [3], clock=lambda: float(next(ticks)))
    assert backend.calls[:2] == [3, 3]  # warm-up
    assert point["batches"] == 5 and point["p50_ms"] == 1000.0 and point["throughput"] == pytest.approx(3.0)


@pytest.mark.parametrize("text", ["", "a,b", "0,4"])
def test_bad_batch_sizes_are_refused(text):
    with pytest.raises(PerfError):
        parse_batch_sizes(text)

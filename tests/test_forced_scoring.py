"""Forced scoring: a run scores exactly its baseline's tokens, so every position is compared."""

import numpy as np
import pytest

from conftest import capture_run, diff_json, run_cmp
from proto.codec import decode

TINY = ("--model-name", "tiny-llama", "--mode", "logprobs", "--prompts", "qwen-11", "--top-k", "8",
        "--max-new-tokens", "6")


@pytest.fixture(scope="module")
def greedy_baseline(shared_server, tiny_llama):
    return capture_run(shared_server.address, "--model", tiny_llama, *TINY)


def _records(server, run_id):
    return [decode(r.blob) for r in server.store.read_records(run_id)]


def test_forced_scoring_of_the_same_model_reproduces_the_greedy_distributions(shared_server, tiny_llama, greedy_baseline):
    forced = capture_run(shared_server.address, "--model", tiny_llama, *TINY, "--score-against", greedy_baseline[:8])
    run = shared_server.store.get_run(forced)
    assert run.fingerprint["mode"] == "forced" and run.options["score_against"] == greedy_baseline
    for g, f in zip(_records(shared_server, greedy_baseline), _records(shared_server, forced)):
        np.testing.assert_array_equal(f["token_ids"], g["token_ids"])
        np.testing.assert_array_equal(f["topk_ids"], g["topk_ids"])
        np.testing.assert_allclose(f["topk_logprobs"], g["topk_logprobs"], atol=1e-4)
    report = diff_json(shared_server.address, greedy_baseline, forced)
    assert report["verdict"] == "PASS" and report["summary"]["kl"] < 1e-6


def test_a_bf16_forced_run_is_compared_at_every_position(shared_server, tiny_llama, greedy_baseline):
    forced = capture_run(shared_server.address, "--model", tiny_llama, *TINY, "--dtype", "bfloat16",
                         "--score-against", greedy_baseline)
    report = diff_json(shared_server.address, greedy_baseline, forced)
    assert report["run_b"]["mode"] == "forced"
    assert report["summary"]["positions"] == 11 * 6
    assert all(row["positions"] == 6 for row in report["per_prompt"])
    assert report["summary"]["diverged_prompts"] == 0  # the scored tokens are the baseline's


def test_scoring_against_a_run_of_other_prompts_is_refused(shared_server, tiny_llama, greedy_baseline):
    proc = run_cmp("capture", "--server", shared_server.address, "--quiet", "--model", tiny_llama,
                   "--mode", "logprobs", "--prompts", "nomic-11", "--score-against", greedy_baseline, check=False)
    assert proc.returncode == 1 and "used other prompts than nomic-11" in proc.stderr


def test_scoring_needs_logprobs_mode(shared_server, tiny_llama, greedy_baseline):
    proc = run_cmp("capture", "--server", shared_server.address, "--model", tiny_llama, "--mode", "embed",
                   "--prompts", "qwen-11", "--score-against", greedy_baseline, check=False)
    assert proc.returncode == 1 and "use it with --mode logprobs" in proc.stderr

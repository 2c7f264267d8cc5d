"""End to end with causal LMs: greedy top-k logprobs from a seeded tiny Llama and from SmolLM2-135M
(dequantized from its GGUF), streamed by agent processes and diffed."""

import numpy as np
import pytest

from conftest import capture_run, diff_json
from proto.codec import decode

TINY = ("--model-name", "tiny-llama", "--mode", "logprobs", "--prompts", "qwen-11", "--top-k", "8",
        "--max-new-tokens", "6")


@pytest.fixture(scope="module")
def tiny_run(shared_server, tiny_llama):
    return capture_run(shared_server.address, "--model", tiny_llama, *TINY)


def test_the_same_model_captured_twice_in_separate_processes_is_identical(shared_server, tiny_llama, tiny_run):
    again = capture_run(shared_server.address, "--model", tiny_llama, *TINY)
    report = diff_json(shared_server.address, tiny_run, again)
    s = report["summary"]
    assert report["kind"] == "logprobs" and report["verdict"] == "PASS"
    assert s["top1_match"] == 1.0 and s["topk_overlap"] == 1.0 and s["first_divergence"] is None
    assert s["prob_cos"] == pytest.approx(1.0) and s["kl"] == pytest.approx(0.0, abs=1e-9)
    assert s["positions"] == 11 * 6


def test_recorded_tokens_and_logprobs_are_greedy_decoding_at_temperature_0(shared_server, tiny_llama, tiny_run):
    """Checked against transformers' own generate() and one forward pass over the whole sequence."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    prompts = shared_server.store.get_prompts(shared_server.store.get_run(tiny_run).prompt_set_digest)
    records = shared_server.store.read_records(tiny_run)
    for i in (0, 9):
        rec = decode(records[i].blob)
        ids = tokenizer(prompts[i]["text"], return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, do_sample=False, max_new_tokens=6, min_new_tokens=6)
            generated = out[0, ids.shape[1]:]
            logprobs = torch.log_softmax(model(out).logits[0, ids.shape[1] - 1:-1].float(), dim=-1)
        assert rec["token_ids"].tolist() == generated.tolist()
        top = torch.topk(logprobs, 8)
        np.testing.assert_array_equal(rec["topk_ids"], top.indices.numpy())
        np.testing.assert_allclose(rec["topk_logprobs"], top.values.numpy(), atol=1e-5)
        np.testing.assert_allclose(rec["token_logprobs"], top.values[:, 0].numpy(), atol=1e-5)


def test_smollm2_fp32_vs_bf16_end_to_end(shared_server, smollm2_path):
    """A real 135M model: bf16 keeps the distributions close (prob_cos, KL) even where greedy
    outputs diverge, and the full first-position distribution is compared exactly."""
    args = ("--model", smollm2_path, "--model-name", "SmolLM2-135M-Instruct", "--mode", "logprobs",
            "--prompts", "qwen-11", "--max-new-tokens", "8", "--full-vocab-first")
    fp32 = capture_run(shared_server.address, *args)
    bf16 = capture_run(shared_server.address, *args, "--dtype", "bfloat16")
    report = diff_json(shared_server.address, fp32, bf16)
    s = report["summary"]
    assert len(report["per_prompt"]) == 11 and s["top_k"] == 20
    assert s["prob_cos"] > 0.99 and s["kl"] < 0.01 and s["spearman"] > 0.95
    assert 0.0 < s["full_kl_first"] < 0.01 and s["full_prob_cos_first"] > 0.99
    assert s["top1_match"] > 0.8
    first = decode(shared_server.store.read_records(fp32)[0].blob)
    assert first["full_logprobs"].shape == (49152,)
    assert np.exp(first["full_logprobs"].astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-4)
    gate_results = {g["metric"]: g["passed"] for g in report["gates"]}
    assert report["verdict"] == ("PASS" if all(gate_results.values()) else "FAIL")

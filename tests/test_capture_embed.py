"""End to end on all-MiniLM-L6-v2: agents in their own processes stream to a real server, and
`cmp diff` tells rounding (fp32 vs bf16) from an implementation mismatch (CLS vs mean pooling)."""

import json

import numpy as np
import pytest

from conftest import capture_run, diff_json, run_cmp

MINILM = ("--model-name", "all-MiniLM-L6-v2", "--mode", "embed", "--prompts", "multilingual-24")


@pytest.fixture(scope="module")
def fp32_run(shared_server, minilm_path):
    return capture_run(shared_server.address, "--model", minilm_path, *MINILM, "--label", "cpu fp32 baseline")


def test_fp32_vs_bf16_on_the_cpu_passes_with_cos_min_above_0_999(shared_server, minilm_path, fp32_run):
    bf16 = capture_run(shared_server.address, "--model", minilm_path, *MINILM, "--dtype", "bfloat16")
    report = diff_json(shared_server.address, fp32_run, bf16)
    assert report["kind"] == "embed" and report["verdict"] == "PASS"
    assert report["summary"]["cos_min"] > 0.999
    assert report["summary"]["cos_min"] < 1.0  # bf16 really ran: not the same numbers twice
    assert report["summary"]["sim_pearson"] > 0.999
    assert report["notes"] == []
    assert [row["id"] for row in report["per_prompt"]] == [f"ml-{i:02d}" for i in range(1, 25)]
    assert report["run_a"]["dtype"] == "float32" and report["run_b"]["dtype"] == "bfloat16"
    assert run_cmp("diff", "--server", shared_server.address, "--gate", fp32_run, bf16).returncode == 0


def test_cls_pooling_against_mean_pooling_fails_and_is_called_an_implementation_mismatch(shared_server, minilm_path, fp32_run):
    cls = capture_run(shared_server.address, "--model", minilm_path, *MINILM, "--pooling", "cls")
    report = diff_json(shared_server.address, fp32_run, cls)
    assert report["verdict"] == "FAIL"
    assert report["summary"]["cos_mean"] < 0.99
    assert "implementation mismatch" in report["notes"][0]
    gated = run_cmp("diff", "--server", shared_server.address, "--gate", fp32_run, cls, check=False)
    assert gated.returncode == 1 and "Verdict: FAIL" in gated.stdout


def test_stored_embeddings_are_the_models_mean_pooled_normalised_outputs(shared_server, minilm_path, fp32_run):
    """Checked against a direct transformers computation, the sentence-transformers recipe."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from proto.codec import decode

    tokenizer, model = AutoTokenizer.from_pretrained(minilm_path), AutoModel.from_pretrained(minilm_path).eval()
    prompts = shared_server.store.get_prompts(shared_server.store.get_run(fp32_run).prompt_set_digest)
    records = shared_server.store.read_records(fp32_run)
    for i in (0, 8, 23):  # English, Chinese, the long one (truncated at 256 tokens)
        batch = tokenizer(prompts[i]["text"], truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)[0].numpy()
        np.testing.assert_allclose(decode(records[i].blob)["embedding"], expected, atol=1e-5)


def test_the_run_records_its_fingerprint_and_pooling(shared_server, minilm_path, fp32_run):
    shown = json.loads(run_cmp("show", "--server", shared_server.address, "--json", fp32_run[:6]).stdout)
    fp = shown["fingerprint"]
    assert fp["model_name"] == "all-MiniLM-L6-v2" and fp["device"] == "cpu" and fp["backend"] == "hf"
    assert fp["torch"].startswith("2.") and fp["transformers"] and fp["python"] and fp["host"]
    assert fp["torch_npu"] == "" and fp["cann"] == "" and fp["vllm"] == ""
    assert len(fp["model_digest"]) == 64 and fp["label"] == "cpu fp32 baseline"
    assert shown["options"]["pooling"] == "mean" and shown["options"]["normalize"] == "true"
    assert shown["status"] == "complete" and shown["record_count"] == 24

"""Backend `openai` against a real OpenAI-compatible server: llama.cpp's (llama-cpp-python) serving
SmolLM2-135M's Q4_1 GGUF file. Diffed against transformers running the dequantized weights in
float32, it is a genuine cross-implementation comparison of one model."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from capture_agent.backends import BackendError
from capture_agent.backends.openai import TokenMap, completion_record
from conftest import _smollm2_gguf, capture_run, diff_json, run_cmp

SMOL = ("--model-name", "SmolLM2-135M-Instruct", "--mode", "logprobs", "--prompts", "rag-25",
        "--max-new-tokens", "8", "--top-k", "10")


def test_token_texts_map_back_to_ids_and_vllm_token_ids_need_no_tokenizer(smollm2_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    tmap = TokenMap(tok)
    paris = tok.encode(" Paris", add_special_tokens=False)
    assert len(paris) == 1 and tmap.id_of(" Paris") == paris[0]
    assert tmap.id_of("token_id:42") == 42
    logprobs = {"tokens": ["token_id:5", "token_id:9"], "token_logprobs": [-0.1, -0.2],
                "top_logprobs": [{"token_id:5": -0.1, "token_id:6": -3.0}, {"token_id:9": -0.2, "token_id:1": -2.5}]}
    rec = completion_record(logprobs, 2, None)
    assert rec["token_ids"].tolist() == [5, 9] and rec["topk_ids"].tolist() == [[5, 6], [9, 1]]


def test_a_token_that_maps_to_no_id_is_a_clear_error():
    logprobs = {"tokens": ["abc"], "token_logprobs": [-0.1], "top_logprobs": [{"abc": -0.1}]}
    with pytest.raises(BackendError, match="cannot map the server's token 'abc' to a token id: pass --tokenizer"):
        completion_record(logprobs, 1, None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by `make test`")
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(_smollm2_gguf()), "--model_alias", "smollm2",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024", "--logits_all", "true", "--n_threads", "2"],
        stdout=open(log, "w"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as r:
                json.loads(r.read())
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"llama.cpp server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_llama_cpp_q4_1_against_transformers_fp32_is_a_real_cross_implementation_diff(shared_server, llama_server, smollm2_path):
    served = capture_run(shared_server.address, "--backend", "openai", "--endpoint", llama_server, "--model", "smollm2",
                         "--tokenizer", smollm2_path, *SMOL, "--label", "llama.cpp Q4_1")
    reference = capture_run(shared_server.address, "--model", smollm2_path, *SMOL, "--label", "transformers fp32")
    run = shared_server.store.get_run(served)
    assert run.fingerprint["backend"] == "openai" and run.options["endpoint"] == llama_server
    report = diff_json(shared_server.address, reference, served)
    s = report["summary"]
    print(json.dumps(s, indent=1))  # the figures the issue note quotes
    # Same weights (the GGUF dequantized), different kernels: llama.cpp multiplies Q4_1 blocks
    # against 8-bit-quantized activations, so the distributions are close but not bf16-close.
    # Where transformers' first token is the end of sequence, llama.cpp reports no token at all:
    # those prompts have no compared position, and the report says so.
    assert s["prompts_compared"] >= 5 and s["positions"] >= 25 and s["top_k"] >= 5
    if s["prompts_compared"] < 25:
        assert any("no compared position" in note for note in report["notes"])
    assert s["topk_overlap"] > 0.6 and s["prob_cos"] > 0.8
    assert 0.0 < s["kl"] < 1.0
    assert np.mean([row["top1_match"] for row in report["per_prompt"] if row["positions"]]) > 0.5


def test_forced_scoring_on_a_server_that_cannot_score_token_ids_is_a_clear_error(shared_server, llama_server, smollm2_path):
    baseline = capture_run(shared_server.address, "--model", smollm2_path, *SMOL[:-4], "--max-new-tokens", "2")
    proc = run_cmp("capture", "--server", shared_server.address, "--quiet", "--backend", "openai", "--endpoint",
                   llama_server, "--model", "smollm2", "--tokenizer", smollm2_path, *SMOL[:-4],
                   "--score-against", baseline, check=False)
    if proc.returncode == 0:
        pytest.fail("llama.cpp's server scored a token-id prompt: forced scoring works there, test it instead")
    assert "cannot score given tokens" in proc.stderr

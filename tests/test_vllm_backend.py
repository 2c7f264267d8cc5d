"""Backend `vllm` on machines without vLLM: the conversions from vLLM's documented output shapes
(RequestOutput, CompletionOutput, Logprob, EmbeddingRequestOutput) give the same records as `hf`."""

from dataclasses import dataclass, field

import numpy as np
import pytest

from capture_agent.backends import BackendError, make_backend
from capture_agent.backends.vllm import embedding_record, forced_record, greedy_record, parse_engine_args, top_k_of


# The fields vLLM documents for its outputs (vllm.outputs, vllm.logprobs); vLLM itself needs a GPU or NPU.
@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = "length"


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[CompletionOutput] = field(default_factory=list)
    finished: bool = True


@dataclass
class EmbeddingOutput:
    embedding: list[float]


@dataclass
class EmbeddingRequestOutput:
    request_id: str
    outputs: EmbeddingOutput
    prompt_token_ids: list[int]
    finished: bool = True


def _vllm_position(logprobs: np.ndarray, k: int, sampled: int) -> dict[int, Logprob]:
    """What vLLM returns for one position: the top k with their ranks, plus the sampled token."""
    order = np.argsort(-logprobs)
    entries = {int(t): Logprob(float(logprobs[t]), rank=r + 1) for r, t in enumerate(order[:k])}
    entries.setdefault(sampled, Logprob(float(logprobs[sampled]), rank=int(np.where(order == sampled)[0][0]) + 1))
    return entries


@pytest.fixture(scope="module")
def tiny_steps(tiny_llama):
    """The tiny Llama's greedy steps on one prompt: prompt ids, generated ids, full logprobs per step."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, do_sample=False, max_new_tokens=5, min_new_tokens=5)
        full = torch.log_softmax(model(out).logits[0].float(), dim=-1).numpy()
    return ids[0].tolist(), out[0, ids.shape[1]:].tolist(), full


def test_greedy_output_converts_to_the_record_hf_makes(tiny_llama, tiny_steps):
    prompt, generated, full = tiny_steps
    k = 8
    steps = full[len(prompt) - 1 : len(prompt) - 1 + len(generated)]
    completion = CompletionOutput(0, "", generated, None, [_vllm_position(lp, k, t) for lp, t in zip(steps, generated)])
    rec = greedy_record(completion, k)
    hf = make_backend("hf", model_path=tiny_llama, device="cpu", dtype="float32", mode="logprobs", top_k=k, max_new_tokens=5)
    (expected,) = hf.records(["The capital of France is"])
    np.testing.assert_array_equal(rec["token_ids"], expected["token_ids"])
    np.testing.assert_array_equal(rec["topk_ids"], expected["topk_ids"])
    np.testing.assert_allclose(rec["topk_logprobs"], expected["topk_logprobs"], atol=1e-5)
    np.testing.assert_allclose(rec["token_logprobs"], expected["token_logprobs"], atol=1e-5)


def test_prompt_logprobs_of_prompt_plus_continuation_score_the_continuation(tiny_steps):
    prompt, generated, full = tiny_steps
    k, sequence = 4, prompt + generated
    # Entry i predicts token i from tokens < i; vLLM sends None for the first token.
    prompt_logprobs = [None] + [_vllm_position(full[i - 1], k, sequence[i]) for i in range(1, len(sequence))]
    out = RequestOutput("0", None, sequence, prompt_logprobs)
    rec = forced_record(out, len(prompt), generated, k)
    assert rec["token_ids"].tolist() == generated
    np.testing.assert_allclose(rec["token_logprobs"], [full[len(prompt) - 1 + t, g] for t, g in enumerate(generated)], atol=1e-6)
    assert rec["topk_ids"].shape == (5, 4)


def test_a_sampled_token_outside_the_top_k_does_not_widen_the_record():
    entries = {5: Logprob(-0.1, 1), 7: Logprob(-2.0, 2), 9: Logprob(-9.0, 40)}  # 9 was sampled, rank 40
    ids, lps = top_k_of(entries, 2)
    assert ids.tolist() == [5, 7] and lps.tolist() == pytest.approx([-0.1, -2.0])


def test_missing_logprobs_say_which_sampling_parameter_to_set():
    with pytest.raises(BackendError, match="SamplingParams\\(logprobs=K\\)"):
        greedy_record(CompletionOutput(0, "", [1], None, None), 4)
    with pytest.raises(BackendError, match="prompt_logprobs=K"):
        forced_record(RequestOutput("0", None, [1, 2], None), 1, [2], 4)


def test_embeddings_convert_from_lists_and_from_tensors():
    import torch

    rec = embedding_record(EmbeddingRequestOutput("0", EmbeddingOutput([0.5, -1.0, 2.0]), [1, 2]))
    assert rec["embedding"].dtype == np.float32 and rec["embedding"].tolist() == [0.5, -1.0, 2.0]

    @dataclass
    class PoolingOutput:  # PoolingRequestOutput.outputs.data is a tensor
        data: object

    @dataclass
    class PoolingRequestOutput:
        outputs: PoolingOutput

    rec = embedding_record(PoolingRequestOutput(PoolingOutput(torch.tensor([[1.0, 2.0]], dtype=torch.bfloat16))))
    assert rec["embedding"].tolist() == [1.0, 2.0]


def test_engine_args_are_typed():
    assert parse_engine_args(["max_model_len=4096", "enforce_eager=true", "runner=pooling", "gpu_memory_utilization=0.9"]) == {
        "max_model_len": 4096, "enforce_eager": True, "runner": "pooling", "gpu_memory_utilization": 0.9}
    with pytest.raises(BackendError, match="expected KEY=VALUE"):
        parse_engine_args(["max_model_len"])


def test_without_vllm_the_backend_names_the_missing_package(minilm_path):
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    with pytest.raises(BackendError, match="backend vllm needs the vllm package .* pip install vllm"):
        make_backend("vllm", model_path=minilm_path, device="cpu", dtype="float32", mode="embed")

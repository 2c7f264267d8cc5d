"""Backend `vllm`: vllm.LLM offline, the same code for vLLM on a GPU and vLLM-Ascend on an NPU.

    backend = VLLMBackend("/models/Pleias-RAG-350M", device="npu:0", dtype="bfloat16", mode="logprobs",
                          engine_args={"max_model_len": 4096, "enforce_eager": True})

- embed: the pooling API (`LLM.embed`), with the pooler the model's own files configure.
- logprobs: `SamplingParams(temperature=0, max_tokens=N, logprobs=K)`; vLLM returns raw
  (pre-temperature) logprobs of the top K plus the sampled token at each step.
- forced: `SamplingParams(max_tokens=1, prompt_logprobs=K)` over prompt + continuation tokens.

vllm is imported only when this backend is built. The conversions from vLLM's outputs to records
are pure functions over vLLM's documented shapes (RequestOutput, CompletionOutput, Logprob,
EmbeddingRequestOutput), tested on machines without vLLM.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from capture_agent.backends import BackendError

# -- pure conversions -------------------------------------------------------------------------


def parse_engine_args(items: Sequence[str]) -> dict:
    """["max_model_len=4096", "enforce_eager=true", "runner=pooling"] -> typed kwargs for vllm.LLM."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise BackendError(f"--engine-arg {item!r}: expected KEY=VALUE, e.g. max_model_len=4096")
        lowered = raw.strip().lower()
        if lowered in ("true", "false"):
            value = lowered == "true"
        else:
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw
        out[key.strip()] = value
    return out


def _logprob(value) -> float:
    """A vLLM Logprob (has .logprob) or a bare float."""
    return float(getattr(value, "logprob", value))


def top_k_of(entries: Mapping[int, object], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most likely (id, logprob) of one position's {token_id: Logprob}, most likely first.

    vLLM adds the sampled token to the top K when it is not among them, so a position may hold
    K + 1 entries; ties keep the smaller id first so reruns are stable.
    """
    ranked = sorted(((int(t), _logprob(v)) for t, v in entries.items()), key=lambda p: (-p[1], p[0]))[:k]
    if len(ranked) < k:
        raise BackendError(f"vLLM returned {len(ranked)} logprobs at a position, expected {k}: raise max_logprobs")
    return np.array([t for t, _ in ranked], np.int64), np.array([lp for _, lp in ranked], np.float32)


def _record(tokens: Sequence[int], positions: Sequence[Mapping[int, object]], k: int) -> dict[str, np.ndarray]:
    ids, lps, chosen = [], [], []
    for token, entries in zip(tokens, positions, strict=True):
        if token not in entries:
            raise BackendError(f"vLLM gave no logprob for the chosen token {token}")
        i, lp = top_k_of(entries, k)
        ids.append(i)
        lps.append(lp)
        chosen.append(_logprob(entries[token]))
    return {
        "token_ids": np.asarray(tokens, np.int64),
        "token_logprobs": np.asarray(chosen, np.float32),
        "topk_ids": np.stack(ids),
        "topk_logprobs": np.stack(lps),
    }


def embedding_record(output) -> dict[str, np.ndarray]:
    """EmbeddingRequestOutput (or PoolingRequestOutput) -> {"embedding": float32 [D]}."""
    data = output.outputs.embedding if hasattr(output.outputs, "embedding") else output.outputs.data
    if hasattr(data, "cpu"):  # PoolingOutput.data is a torch tensor, often bf16 (numpy has no bf16)
        data = data.float().cpu()
    return {"embedding": np.asarray(data, dtype=np.float32).reshape(-1)}


def greedy_record(completion, k: int) -> dict[str, np.ndarray]:
    """CompletionOutput of a logprobs=K request -> a logprobs record of its generated tokens."""
    if completion.logprobs is None:
        raise BackendError("vLLM returned no logprobs: the request must set SamplingParams(logprobs=K)")
    return _record(list(completion.token_ids), [completion.logprobs[i] for i in range(len(completion.token_ids))], k)


def forced_record(request_output, prompt_len: int, continuation: Sequence[int], k: int) -> dict[str, np.ndarray]:
    """RequestOutput of prompt + continuation with prompt_logprobs=K -> the continuation's record.

    prompt_logprobs[i] is the distribution that predicted token i (entry 0 is None), so the
    continuation's token t is scored by entry prompt_len + t.
    """
    pl = request_output.prompt_logprobs
    if pl is None:
        raise BackendError("vLLM returned no prompt logprobs: the request must set SamplingParams(prompt_logprobs=K)")
    positions = [pl[prompt_len + t] for t in range(len(continuation))]
    return _record([int(t) for t in continuation], positions, k)


# -- the backend ------------------------------------------------------------------------------


def _import_vllm():
    try:
        import vllm
    except ImportError:
        raise BackendError(
            "backend vllm needs the vllm package (on an NPU host also vllm-ascend): pip install vllm, "
            "or use --backend hf"
        ) from None
    return vllm


class VLLMBackend:
    name = "vllm"

    def __init__(self, model_path: str, device: str, dtype: str, mode: str, *, top_k: int = 20,
                 max_new_tokens: int = 32, full_vocab_first: bool = False, engine_args: dict | None = None,
                 trust_remote_code: bool = False, pooling: str | None = None, normalize: bool | None = None, **_):
        if full_vocab_first:
            raise BackendError("--full-vocab-first is not available with vllm (it caps logprobs at max_logprobs): "
                               "capture the full-vocabulary baseline with --backend hf")
        if pooling is not None or normalize is not None:
            raise BackendError("vllm pools as the model's files say: set a different pooler with "
                               "--engine-arg pooler_config=..., not --pooling/--normalize")
        vllm = _import_vllm()
        self._vllm = vllm
        self.device, self.dtype, self.mode = device, dtype, mode
        self.top_k, self.max_new_tokens = top_k, max_new_tokens
        self.engine_args = {"model": model_path, "dtype": dtype, "trust_remote_code": trust_remote_code,
                            **(engine_args or {})}
        if mode == "embed":
            self.engine_args.setdefault("runner", "pooling")
            self.engine_args.setdefault("convert", "embed")
        self.llm = vllm.LLM(**self.engine_args)
        self.tokenizer = self.llm.get_tokenizer()

    def describe(self) -> dict[str, str]:
        from capture_agent.devices import device_name, import_torch_for

        try:
            return {"device_name": device_name(import_torch_for(self.device), self.device)}
        except BackendError:
            return {"device_name": ""}

    def options(self) -> dict[str, str]:
        opts = {f"engine.{k}": str(v) for k, v in sorted(self.engine_args.items()) if k != "model"}
        if self.mode != "embed":
            opts.update(top_k=str(self.top_k), max_new_tokens=str(self.max_new_tokens))
        return opts

    def run_batch(self, texts: list[str]) -> None:
        """One timed call for --perf: vLLM batches the prompts itself."""
        if self.mode == "embed":
            self.llm.embed(texts, use_tqdm=False)
        else:
            params = self._vllm.SamplingParams(temperature=0.0, max_tokens=self.max_new_tokens)
            self.llm.generate(texts, params, use_tqdm=False)

    def records(self, texts: list[str], continuations=None) -> Iterator[dict[str, np.ndarray]]:
        sp = self._vllm.SamplingParams
        if self.mode == "embed":
            for output in self.llm.embed(texts):
                yield embedding_record(output)
        elif continuations is not None:
            params = sp(temperature=0.0, max_tokens=1, prompt_logprobs=self.top_k)
            for text, cont in zip(texts, continuations, strict=True):
                prompt = list(self.tokenizer(text).input_ids)
                request = {"prompt_token_ids": prompt + [int(t) for t in cont]}
                (output,) = self.llm.generate([request], params, use_tqdm=False)
                yield forced_record(output, len(prompt), cont, self.top_k)
        else:
            params = sp(temperature=0.0, max_tokens=self.max_new_tokens, logprobs=self.top_k)
            for output in self.llm.generate(texts, params, use_tqdm=False):
                yield greedy_record(output.outputs[0], self.top_k)

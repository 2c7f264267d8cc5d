"""Backend `openai`: any OpenAI-compatible server (`vllm serve` above all, llama.cpp's server too).

    backend = OpenAIBackend("http://127.0.0.1:8000", model="/models/nomic-embed-text-v1", mode="embed")

- embed: POST /v1/embeddings.
- logprobs: POST /v1/completions with temperature 0 and logprobs=K. Token ids come from the
  server where it offers them (vLLM's `return_tokens_as_token_ids` gives "token_id:123"), else
  each token's text is mapped back to its id through the model's tokenizer (--tokenizer).
- forced: POST /v1/completions with the prompt as token ids, echo and logprobs (vLLM); a server
  that cannot do that gets a clear error.

Plain urllib: no client library to install on a device host.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np

from capture_agent.backends import BackendError

TOKEN_ID = re.compile(r"^token_id:(\d+)$")
# Server extensions beyond the OpenAI API, ignored where unknown: ask vLLM for token ids, and
# switch off the repetition penalties llama.cpp applies by default even at temperature 0
# (greedy there would otherwise not pick the most likely token).
GREEDY_EXTRAS = {"return_tokens_as_token_ids": True, "repeat_penalty": 1.0, "repetition_penalty": 1.0,
                 "frequency_penalty": 0.0, "presence_penalty": 0.0}
TIMEOUT_S = 600


class TokenMap:
    """Token text -> id, the inverse of decoding one id, as the server does for its logprobs."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        self._ids: dict[str, int] = {}
        self.ambiguous: set[str] = set()
        for i, text in enumerate(texts):
            if text in self._ids:
                self.ambiguous.add(text)
            else:
                self._ids[text] = i

    def id_of(self, text: str) -> int | None:
        """The id whose text this is, or None when no single id decodes to it."""
        if match := TOKEN_ID.match(text):
            return int(match.group(1))
        if text in self.ambiguous:
            return None
        return self._ids.get(text)


def token_id(text: str, token_map: TokenMap | None) -> int | None:
    if match := TOKEN_ID.match(text):
        return int(match.group(1))
    return token_map.id_of(text) if token_map else None


def completion_record(logprobs: dict, k: int, token_map: TokenMap | None, first: int = 0,
                      tokens: list[int] | None = None) -> dict[str, np.ndarray]:
    """An OpenAI completions `logprobs` object -> a logprobs record of positions first.. (as many
    as `tokens` when given: the known ids of those positions).

    Candidates whose text maps to no single id are dropped; the record keeps as many candidates
    per position as every position has (at most k). The chosen token must map, or it is an error.
    """
    end = first + len(tokens) if tokens is not None else None
    texts, chosen_lp, tops = (logprobs[key][first:end] for key in ("tokens", "token_logprobs", "top_logprobs"))
    ids = []
    for pos, text in enumerate(texts):
        tid = tokens[pos] if tokens is not None else token_id(text, token_map)
        if tid is None:
            raise BackendError(
                f"cannot map the server's token {text!r} to a token id: pass --tokenizer with the served "
                "model's tokenizer, or use a server that returns token ids (vLLM: return_tokens_as_token_ids)"
            )
        ids.append(tid)
    topk_ids, topk_lps = [], []
    for top in tops:
        mapped = {}
        for text, lp in (top or {}).items():
            tid = token_id(text, token_map)
            if tid is not None and tid not in mapped:
                mapped[tid] = float(lp)
        ranked = sorted(mapped.items(), key=lambda p: (-p[1], p[0]))[:k]
        topk_ids.append([t for t, _ in ranked])
        topk_lps.append([lp for _, lp in ranked])
    width = min((len(r) for r in topk_ids), default=k)
    if width == 0:
        raise BackendError("the server returned no top logprobs that map to token ids: check --tokenizer")
    return {
        "token_ids": np.asarray(ids, np.int64),
        "token_logprobs": np.asarray(chosen_lp, np.float32),
        "topk_ids": np.asarray([r[:width] for r in topk_ids], np.int64).reshape(len(ids), width),
        "topk_logprobs": np.asarray([r[:width] for r in topk_lps], np.float32).reshape(len(ids), width),
    }


class OpenAIBackend:
    name = "openai"

    def __init__(self, endpoint: str, model: str, mode: str, *, tokenizer: str | None = None, top_k: int = 20,
                 max_new_tokens: int = 32, batch_size: int = 32, full_vocab_first: bool = False,
                 pooling: str | None = None, normalize: bool | None = None, **_):
        if not endpoint:
            raise BackendError("backend openai needs --endpoint URL, e.g. http://127.0.0.1:8000")
        if full_vocab_first or pooling is not None or normalize is not None:
            raise BackendError("--full-vocab-first, --pooling and --normalize are not available with --backend openai: "
                               "the server decides them")
        self.endpoint = endpoint.rstrip("/").removesuffix("/v1")
        self.model, self.mode = model, mode
        self.top_k, self.max_new_tokens, self.batch_size = top_k, max_new_tokens, batch_size
        self.tokenizer_path = tokenizer or ""
        self.token_map = None
        self.tokenizer = None
        if tokenizer:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer)
            self.token_map = TokenMap(self.tokenizer)
        self.server_model = self._served_model()

    def _post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(
            self.endpoint + path, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', 'none')}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:300]
            raise BackendError(f"{self.endpoint}{path} answered {e.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            raise BackendError(f"cannot reach the OpenAI-compatible server at {self.endpoint}: {e}") from None

    def _served_model(self) -> str:
        """The server's model id (GET /v1/models), so a name mismatch fails before the first prompt."""
        try:
            with urllib.request.urlopen(self.endpoint + "/v1/models", timeout=30) as reply:
                models = [m["id"] for m in json.loads(reply.read()).get("data", [])]
        except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
            raise BackendError(f"cannot list the models of {self.endpoint}/v1/models: {e}") from None
        return self.model if self.model in models or not models else models[0]

    def describe(self) -> dict[str, str]:
        return {"device_name": f"OpenAI-compatible server {self.endpoint} ({self.server_model})"}

    def options(self) -> dict[str, str]:
        opts = {"endpoint": self.endpoint, "served_model": self.server_model}
        if self.mode != "embed":
            opts.update(top_k=str(self.top_k), max_new_tokens=str(self.max_new_tokens), tokenizer=self.tokenizer_path)
        return opts

    def run_batch(self, texts: list[str]) -> None:
        """One timed call for --perf: a request carrying the whole batch."""
        if self.mode == "embed":
            self._post("/v1/embeddings", {"model": self.server_model, "input": texts})
        else:
            self._post("/v1/completions", {"model": self.server_model, "prompt": texts, "temperature": 0.0,
                                           "max_tokens": self.max_new_tokens})

    def records(self, texts: list[str], continuations=None) -> Iterator[dict[str, np.ndarray]]:
        if self.mode == "embed":
            for start in range(0, len(texts), self.batch_size):
                reply = self._post("/v1/embeddings", {"model": self.server_model, "input": texts[start:start + self.batch_size]})
                for item in sorted(reply["data"], key=lambda d: d["index"]):
                    yield {"embedding": np.asarray(item["embedding"], np.float32)}
        elif continuations is not None:
            for text, cont in zip(texts, continuations, strict=True):
                yield self._forced(text, [int(t) for t in cont])
        else:
            for text in texts:
                reply = self._post("/v1/completions", {
                    "model": self.server_model, "prompt": text, "max_tokens": self.max_new_tokens,
                    "temperature": 0.0, "logprobs": self.top_k, **GREEDY_EXTRAS,
                })
                yield completion_record(reply["choices"][0]["logprobs"], self.top_k, self.token_map)

    def _forced(self, text: str, cont: list[int]) -> dict[str, np.ndarray]:
        if self.tokenizer is None:
            raise BackendError("forced scoring with --backend openai needs --tokenizer to tokenize the prompts")
        prompt = list(self.tokenizer(text).input_ids)
        try:
            reply = self._post("/v1/completions", {
                "model": self.server_model, "prompt": prompt + cont, "max_tokens": 1, "echo": True,
                "temperature": 0.0, "logprobs": self.top_k, **GREEDY_EXTRAS,
            })
        except BackendError as e:
            raise BackendError(f"the server cannot score given tokens (echo + logprobs over a token-id prompt), "
                               f"which forced scoring needs; vLLM's server can. It said: {e}") from None
        return completion_record(reply["choices"][0]["logprobs"], self.top_k, self.token_map,
                                 first=len(prompt), tokens=cont)

"""Backend `hf`: transformers + torch. The same code runs on cpu, cuda[:N] and npu[:N].

    backend = HFBackend("./all-MiniLM-L6-v2", device="npu:0", dtype="bfloat16", mode="embed")
    for arrays in backend.records(["Hello world", ...]):
        arrays["embedding"]   # float32 [D]

Outputs are computed in the requested dtype on the device and upcast to float32 on the host
(lossless from bf16/fp16); log-softmax runs on the float32-upcast logits.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator

import numpy as np

from capture_agent.backends import BackendError
from capture_agent.devices import device_name, import_torch_for

DTYPES = ("float32", "bfloat16", "float16")
POOLINGS = ("mean", "cls", "last")


def sentence_transformers_pooling(model_dir: pathlib.Path) -> tuple[str | None, bool | None, int | None]:
    """(pooling, normalize, max_seq_length) read from a sentence-transformers model folder.

    None where the folder does not say (no modules.json, say).
    """
    pooling = normalize = max_len = None
    modules_file = model_dir / "modules.json"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text())
        normalize = any(m.get("type", "").endswith(".Normalize") for m in modules)
        for m in modules:
            if m.get("type", "").endswith(".Pooling"):
                cfg = json.loads((model_dir / m["path"] / "config.json").read_text())
                if cfg.get("pooling_mode_cls_token"):
                    pooling = "cls"
                elif cfg.get("pooling_mode_lasttoken"):
                    pooling = "last"
                elif cfg.get("pooling_mode_mean_tokens"):
                    pooling = "mean"
    st_config = model_dir / "sentence_bert_config.json"
    if st_config.is_file():
        max_len = json.loads(st_config.read_text()).get("max_seq_length")
    return pooling, normalize, max_len


def _pretrained_args(model_path: pathlib.Path) -> tuple[str, dict]:
    """from_pretrained's location and kwargs: a folder, or a .gguf file inside one."""
    if model_path.is_file() and model_path.suffix == ".gguf":
        return str(model_path.parent), {"gguf_file": model_path.name}
    if model_path.is_dir():
        return str(model_path), {}
    raise BackendError(f"model {model_path} is neither a model folder nor a .gguf file")


def _dtype_kwarg(torch_dtype) -> dict:
    # transformers renamed torch_dtype to dtype in 4.56; an unknown kwarg is silently ignored
    # by older versions, which would load float32 and record the wrong dtype.
    import transformers
    from packaging.version import Version

    key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {key: torch_dtype}


class HFBackend:
    name = "hf"

    def __init__(self, model_path: str, device: str, dtype: str, mode: str, *, pooling: str | None = None,
                 normalize: bool | None = None, batch_size: int = 32, top_k: int = 20,
                 max_new_tokens: int = 32, full_vocab_first: bool = False, trust_remote_code: bool = False):
        if dtype not in DTYPES:
            raise BackendError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
        self.torch = import_torch_for(device)
        import transformers

        transformers.utils.logging.disable_progress_bar()  # the agent draws its own progress bar
        self.model_path = pathlib.Path(model_path)
        self.device, self.dtype, self.mode = device, dtype, mode
        self.batch_size, self.top_k, self.max_new_tokens = batch_size, top_k, max_new_tokens
        self.full_vocab_first = full_vocab_first
        location, extra = _pretrained_args(self.model_path)
        extra = {**extra, "trust_remote_code": trust_remote_code}
        torch_dtype = getattr(self.torch, dtype)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(location, **extra)
        if mode == "embed":
            st_pooling, st_normalize, max_len = (
                sentence_transformers_pooling(self.model_path) if self.model_path.is_dir() else (None, None, None)
            )
            self.pooling = pooling or st_pooling or "mean"
            if self.pooling not in POOLINGS:
                raise BackendError(f"unknown pooling {self.pooling!r}: choose one of {', '.join(POOLINGS)}")
            self.normalize = st_normalize if normalize is None else normalize
            self.normalize = bool(self.normalize)
            self.max_length = int(max_len or min(getattr(self.tokenizer, "model_max_length", 512), 512))
            model_cls = transformers.AutoModel
        else:
            model_cls = transformers.AutoModelForCausalLM
        self.model = model_cls.from_pretrained(location, **extra, **_dtype_kwarg(torch_dtype)).to(device).eval()
        if self.model.dtype != torch_dtype:
            raise BackendError(f"model loaded as {self.model.dtype}, not {dtype}: check the transformers version")

    def describe(self) -> dict[str, str]:
        """Fingerprint fields this backend knows: the device's name."""
        return {"device_name": device_name(self.torch, self.device)}

    def options(self) -> dict[str, str]:
        """Capture options that change the numbers, recorded with the run."""
        if self.mode == "embed":
            return {"pooling": self.pooling, "normalize": str(self.normalize).lower(),
                    "max_length": str(self.max_length), "batch_size": str(self.batch_size)}
        return {"top_k": str(self.top_k), "max_new_tokens": str(self.max_new_tokens),
                "full_vocab_first": str(self.full_vocab_first).lower()}

    def records(self, texts: list[str], continuations: list[np.ndarray] | None = None) -> Iterator[dict[str, np.ndarray]]:
        """One record per text, in order, produced lazily so they can stream as they are made.

        With continuations (forced scoring), each text's given token ids are scored instead of
        decoding greedily.
        """
        if self.mode == "embed":
            yield from self._embed(texts)
        elif continuations is not None:
            for text, continuation in zip(texts, continuations, strict=True):
                yield self._forced(text, continuation)
        else:
            for text in texts:
                yield self._greedy(text)

    def run_batch(self, texts: list[str]) -> None:
        """One timed call for --perf: a batched forward (embed) or batched greedy generation."""
        torch = self.torch
        if self.mode == "embed":
            for _ in self._embed(texts):
                pass
        else:
            if self.tokenizer.pad_token_id is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            self.tokenizer.padding_side = "left"  # generation continues from the right end
            batch = self.tokenizer(texts, return_tensors="pt", padding=True).to(self.device)
            with torch.inference_mode():
                self.model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                    do_sample=False, max_new_tokens=self.max_new_tokens,
                                    pad_token_id=self.tokenizer.pad_token_id)
        kind = self.device.partition(":")[0]
        if kind != "cpu":
            getattr(torch, kind).synchronize()

    # -- embeddings -------------------------------------------------------------------------

    def _pool(self, hidden, mask):
        torch = self.torch
        hidden = hidden.float()  # pool the model's outputs, not a bf16 reduction we would add
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "last":
            last = mask.sum(dim=1) - 1
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled

    def _embed(self, texts: list[str]) -> Iterator[dict[str, np.ndarray]]:
        torch = self.torch
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
                pooled = self._pool(hidden, batch["attention_mask"]).cpu().numpy()
            for row in pooled:
                yield {"embedding": np.ascontiguousarray(row, dtype=np.float32)}

    # -- logprobs ---------------------------------------------------------------------------

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id if self.model.generation_config else None
        if ids is None:
            ids = self.tokenizer.eos_token_id
        return set(ids if isinstance(ids, list) else [] if ids is None else [ids])

    def _greedy(self, text: str) -> dict[str, np.ndarray]:
        """Greedy decoding at temperature 0, recording each step's token and top-k logprobs."""
        torch = self.torch
        eos = self._eos_ids()
        ids = self.tokenizer(text, return_tensors="pt").input_ids.to(self.device)
        tokens, token_lp, topk_ids, topk_lp = [], [], [], []
        full = None
        with torch.inference_mode():
            out = self.model(input_ids=ids, use_cache=True)
            for step in range(self.max_new_tokens):
                logprobs = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
                top = torch.topk(logprobs, min(self.top_k, logprobs.shape[-1]))
                token = int(top.indices[0])
                tokens.append(token)
                token_lp.append(float(top.values[0]))
                topk_ids.append(top.indices.cpu().numpy())
                topk_lp.append(top.values.cpu().numpy())
                if step == 0 and self.full_vocab_first:
                    full = logprobs.cpu().numpy()
                if token in eos:
                    break
                nxt = torch.tensor([[token]], device=self.device)
                out = self.model(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)
        return _logprob_record(tokens, token_lp, np.stack(topk_ids), np.stack(topk_lp), full)

    def _forced(self, text: str, continuation: np.ndarray) -> dict[str, np.ndarray]:
        """Scores a given continuation with one forward pass over prompt + continuation."""
        torch = self.torch
        prompt = self.tokenizer(text, return_tensors="pt").input_ids[0]
        cont = torch.as_tensor(np.asarray(continuation, dtype=np.int64))
        ids = torch.cat([prompt, cont]).unsqueeze(0).to(self.device)
        with torch.inference_mode():
            # Position p's logits predict token p + 1: the continuation is predicted from the
            # last prompt position up to the second-to-last position.
            logits = self.model(input_ids=ids).logits[0, len(prompt) - 1 : ids.shape[1] - 1]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            top = torch.topk(logprobs, min(self.top_k, logprobs.shape[-1]))
            chosen = logprobs.gather(1, cont.to(self.device).unsqueeze(1))[:, 0]
        full = logprobs[0].cpu().numpy() if self.full_vocab_first else None
        return _logprob_record(cont.numpy(), chosen.cpu().numpy(), top.indices.cpu().numpy(), top.values.cpu().numpy(), full)


def _logprob_record(tokens, token_lp, topk_ids, topk_lp, full=None) -> dict[str, np.ndarray]:
    record = {
        "token_ids": np.asarray(tokens, dtype=np.int64),
        "token_logprobs": np.asarray(token_lp, dtype=np.float32),
        "topk_ids": np.asarray(topk_ids, dtype=np.int64),
        "topk_logprobs": np.asarray(topk_lp, dtype=np.float32),
    }
    if full is not None:
        record["full_logprobs"] = np.asarray(full, dtype=np.float32)
    return record

"""What `cmp capture` does, as one library call: load, fingerprint, capture, upload or bundle.

    run_id = run_capture(CaptureRequest(server="10.0.0.5:50051", model_path="./bge", device="npu:0",
                                        dtype="bfloat16", mode="embed", prompts="multilingual-24"))
"""

from __future__ import annotations

import os
import pathlib
import sys
from dataclasses import dataclass

from capture_agent.backends import BackendError, make_backend
from capture_agent.bundle import BundleSink, read_bundle
from capture_agent.capture import ServerSink, capture
from capture_agent.fingerprint import host_fingerprint, model_digest, model_name
from capture_agent.perf import parse_batch_sizes
from capture_agent.prompts import load_prompt_set
from proto.codec import decode


@dataclass
class CaptureRequest:
    server: str
    model_path: str
    device: str
    dtype: str
    mode: str  # "embed" | "logprobs"
    prompts: str
    model_name: str | None = None
    backend: str = "hf"
    top_k: int = 20
    max_new_tokens: int = 32
    full_vocab_first: bool = False
    pooling: str | None = None
    normalize: bool | None = None
    batch_size: int = 32
    trust_remote_code: bool = False
    label: str = ""
    engine_args: tuple[str, ...] = ()  # vllm: KEY=VALUE for vllm.LLM
    endpoint: str = ""  # openai: the server's URL
    tokenizer: str = ""  # openai: the served model's tokenizer, to map token texts to ids
    score_against: str = ""  # baseline run id (or bundle file) whose tokens are scored
    out: str = ""  # write an offline bundle here instead of streaming
    perf: str = ""  # batch sizes to time, e.g. "1,4,16"
    resume: str = ""  # an open run to continue (after the agent was killed, say)
    progress: bool = True


def baseline_continuations(client, baseline: str, prompt_set) -> tuple[str, list]:
    """(baseline id, token ids per prompt) from a run on the server or a bundle file."""
    if pathlib.Path(baseline).is_file():
        bundle = read_bundle(baseline)
        run_id, digest, mode = bundle.bundle_id, bundle.prompt_set.digest, bundle.fingerprint.get("mode")
        blobs = [blob for _, blob in bundle.records]
    else:
        run = client.get_run(baseline)
        run_id, digest, mode = run["id"], run["prompt_set"]["digest"], run["fingerprint"]["mode"]
        if run["status"] != "complete":
            raise BackendError(f"baseline run {run_id} is {run['status']}, not complete: score against a complete run")
        blobs = [blob for _, blob in client.get_records(run_id)]
    if mode == "embed":
        raise BackendError(f"baseline {run_id} is an embed run: --score-against needs a logprobs run")
    if digest != prompt_set.digest:
        raise BackendError(f"baseline {run_id} used other prompts than {prompt_set.name}: use the same --prompts")
    return run_id, [decode(blob)["token_ids"] for blob in blobs]


# Fingerprint fields a resumed capture must share with the run it continues.
RESUME_FIELDS = ("model_name", "model_digest", "backend", "device", "dtype", "mode")


def _warn(message: str) -> None:
    print(f"cmp capture: {message}", file=sys.stderr, flush=True)


def check_resumable(run: dict, fingerprint: dict, options: dict, extra: dict, prompt_set) -> None:
    """Refuses to resume a run with a capture that would make other records."""
    if run["status"] != "open":
        raise BackendError(f"run {run['id']} is {run['status']}: only an open run can be resumed")
    if run["prompt_set"]["digest"] != prompt_set.digest:
        raise BackendError(f"run {run['id']} used other prompts than {prompt_set.name}: resume with its --prompts")
    for field in RESUME_FIELDS:
        if run["fingerprint"][field] != fingerprint[field]:
            raise BackendError(f"run {run['id']} was captured with {field} {run['fingerprint'][field]!r}, this capture "
                               f"has {fingerprint[field]!r}: resume with the run's own options")
    if run["options"] != {**options, **extra}:
        raise BackendError(f"run {run['id']} was captured with options {run['options']}: resume with the same options")


def backend_kwargs(req: CaptureRequest) -> dict:
    """The arguments of the chosen backend, refusing options that belong to another one."""
    if req.engine_args and req.backend != "vllm":
        raise BackendError("--engine-arg is for --backend vllm")
    if req.endpoint and req.backend != "openai":
        raise BackendError("--endpoint is for --backend openai")
    common = dict(mode=req.mode, top_k=req.top_k, max_new_tokens=req.max_new_tokens,
                  full_vocab_first=req.full_vocab_first, pooling=req.pooling, normalize=req.normalize,
                  batch_size=req.batch_size)
    if req.backend == "openai":
        return dict(endpoint=req.endpoint, model=req.model_path, tokenizer=req.tokenizer or None, **common)
    kwargs = dict(model_path=req.model_path, device=req.device, dtype=req.dtype,
                  trust_remote_code=req.trust_remote_code, **common)
    if req.backend == "vllm":
        from capture_agent.backends.vllm import parse_engine_args

        kwargs["engine_args"] = parse_engine_args(req.engine_args)
    return kwargs


def run_capture(req: CaptureRequest) -> str:
    """Runs the whole capture; returns the new run's id (or the bundle's path with --out)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from compare_server.client import Client

    if req.score_against and req.mode != "logprobs":
        raise BackendError("--score-against scores tokens: use it with --mode logprobs")
    prompt_set = load_prompt_set(req.prompts)  # before the model: a typo should fail in a second
    batch_sizes = parse_batch_sizes(req.perf) if req.perf else []
    with Client(req.server) as client:
        continuations, extra = None, {}
        if req.score_against:
            baseline_id, continuations = baseline_continuations(client, req.score_against, prompt_set)
            extra = {"score_against": baseline_id}
        backend = make_backend(req.backend, **backend_kwargs(req))
        fingerprint = {
            **host_fingerprint(req.device),
            **backend.describe(),
            "backend": backend.name,
            "device": req.device,
            "dtype": req.dtype,
            "model_name": req.model_name or model_name(req.model_path),
            "model_digest": model_digest(req.model_path),
            "mode": "embed" if req.mode == "embed" else "forced" if continuations is not None else "greedy",
            "label": req.label,
        }
        if req.resume:
            check_resumable(client.get_run(req.resume), fingerprint, backend.options(), extra, prompt_set)
        sink = BundleSink(req.out) if req.out else ServerSink(client, resume_run=req.resume, log=_warn)
        run_id = capture(sink, backend, prompt_set, fingerprint, continuations=continuations,
                         extra_options=extra, perf_batch_sizes=batch_sizes, progress=req.progress)
        return str(sink.path) if req.out else run_id

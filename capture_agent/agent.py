"""What `cmp capture` does, as one library call: load, fingerprint, capture, upload.

    run_id = run_capture(CaptureRequest(server="10.0.0.5:50051", model_path="./bge", device="npu:0",
                                        dtype="bfloat16", mode="embed", prompts="multilingual-24"))
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from capture_agent.backends import make_backend
from capture_agent.capture import capture
from capture_agent.fingerprint import host_fingerprint, model_digest, model_name
from capture_agent.prompts import load_prompt_set

# CLI --mode -> the mode a run records; forced scoring is chosen by its own option.
RUN_MODE = {"embed": "embed", "logprobs": "greedy"}


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
    progress: bool = True


def run_capture(req: CaptureRequest) -> str:
    """Runs the whole capture and returns the new run's id."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from compare_server.client import Client

    prompt_set = load_prompt_set(req.prompts)  # before the model: a typo should fail in a second
    backend = make_backend(
        req.backend, model_path=req.model_path, device=req.device, dtype=req.dtype, mode=req.mode,
        pooling=req.pooling, normalize=req.normalize, batch_size=req.batch_size, top_k=req.top_k,
        max_new_tokens=req.max_new_tokens, full_vocab_first=req.full_vocab_first,
        trust_remote_code=req.trust_remote_code,
    )
    fingerprint = {
        **host_fingerprint(),
        **backend.describe(),
        "backend": backend.name,
        "device": req.device,
        "dtype": req.dtype,
        "model_name": req.model_name or model_name(req.model_path),
        "model_digest": model_digest(req.model_path),
        "mode": RUN_MODE[req.mode],
        "label": req.label,
    }
    with Client(req.server) as client:
        return capture(client, backend, prompt_set, fingerprint, progress=req.progress)

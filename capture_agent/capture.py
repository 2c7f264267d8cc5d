"""A capture: run a prompt set through a backend and stream the records to the compare server.

    run_id = capture(client, backend, prompt_set, fingerprint)

The model is loaded and the fingerprint taken before the run is opened, so a model that fails
to load leaves no run behind. Records are encoded and streamed as the backend makes them; if
the backend fails midway the run is closed as failed, with the error as its reason.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from proto.codec import encode
from proto.digests import record_sha256, run_digest


class CaptureError(RuntimeError):
    """A capture the server did not accept as complete."""


def capture(client, backend, prompt_set, fingerprint: dict[str, str], progress: bool = True) -> str:
    """Runs every prompt through the backend, uploads the records, closes the run; returns its id."""
    options = backend.options()
    run_id = client.open_run(fingerprint, options, prompt_set)
    texts = [p.text for p in prompt_set.prompts]
    hashes: list[str] = []
    failure: list[BaseException] = []
    bar = tqdm(total=len(texts), desc=f"capture {run_id}", unit="prompt", file=sys.stderr, disable=not progress)

    def records():
        try:
            for index, arrays in enumerate(backend.records(texts)):
                blob = encode(arrays)
                hashes.append(record_sha256(blob))
                bar.update(1)
                yield index, blob
        except Exception as e:  # surfaced below: a raising request iterator only cancels the rpc
            failure.append(e)

    try:
        client.upload(run_id, records())
    finally:
        bar.close()
    if failure:
        error = failure[0]
        client.close_run(run_id, len(hashes), run_digest(hashes), abort_reason=f"{type(error).__name__}: {error}")
        raise error
    status, reason = client.close_run(run_id, len(hashes), run_digest(hashes))
    if status != "complete":
        raise CaptureError(f"run {run_id} failed on the server: {reason}")
    return run_id

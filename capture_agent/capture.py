"""A capture: run a prompt set through a backend and hand each record to a sink as it is made.

    run_id = capture(ServerSink(client), backend, prompt_set, fingerprint)    # stream to a server
    bundle_id = capture(BundleSink("run.cmpbundle"), backend, prompt_set, fingerprint)  # offline

The model is loaded and the fingerprint taken before the run is opened, so a model that fails
to load leaves no run behind. If the backend fails midway the run is closed as failed, with the
error as its reason.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from proto.codec import encode
from proto.digests import record_sha256, run_digest


class CaptureError(RuntimeError):
    """A capture the server did not accept as complete."""


class ServerSink:
    """Streams a run to a compare server, retrying and resuming (capture_agent.uploader).

    With resume_run, it continues that open run instead of opening a new one: the records are
    made again, and only those the server lacks are sent; the close's digest then proves the
    stored ones equal what this capture made.
    """

    def __init__(self, client, resume_run: str = "", log=None):
        self.client, self.run_id, self.log = client, resume_run, log
        self.stored: list[int] = []

    def open_run(self, fingerprint, options, prompt_set) -> str:
        if self.run_id:
            self.stored = self.client.resume_run(self.run_id).stored_indexes
        else:
            self.run_id = self.client.open_run(fingerprint, options, prompt_set).run_id
        return self.run_id

    def upload(self, records) -> None:
        from capture_agent.uploader import Uploader

        Uploader(self.client, self.run_id, log=self.log).upload(records, already_stored=self.stored)

    def close_run(self, record_count: int, digest: str, abort_reason: str = "", perf=None) -> tuple[str, str]:
        return self.client.close_run(self.run_id, record_count, digest, abort_reason=abort_reason, perf=perf)


def capture(sink, backend, prompt_set, fingerprint: dict[str, str], continuations=None,
            extra_options: dict[str, str] | None = None, perf_batch_sizes=(), progress: bool = True) -> str:
    """Runs every prompt through the backend into the sink and closes the run; returns its id.

    continuations: for forced scoring, the token ids to score after each prompt.
    perf_batch_sizes: also measure speed at these batch sizes (after the records, before closing).
    """
    options = {**backend.options(), **(extra_options or {})}
    run_id = sink.open_run(fingerprint, options, prompt_set)
    texts = [p.text for p in prompt_set.prompts]
    hashes: list[str] = []
    failure: list[BaseException] = []
    bar = tqdm(total=len(texts), desc=f"capture {run_id[:12]}", unit="prompt", file=sys.stderr, disable=not progress)

    def records():
        try:
            for index, arrays in enumerate(backend.records(texts, continuations)):
                blob = encode(arrays)
                hashes.append(record_sha256(blob))
                bar.update(1)
                yield index, blob
        except Exception as e:  # surfaced below: a raising request iterator only cancels the rpc
            failure.append(e)

    try:
        sink.upload(records())
    finally:
        bar.close()
    if failure:
        error = failure[0]
        sink.close_run(len(hashes), run_digest(hashes), abort_reason=f"{type(error).__name__}: {error}")
        raise error
    perf = None
    if perf_batch_sizes:
        from capture_agent.perf import measure

        perf = measure(backend, texts, list(perf_batch_sizes))
    status, reason = sink.close_run(len(hashes), run_digest(hashes), perf=perf)
    if status != "complete":
        raise CaptureError(f"run {run_id} failed on the server: {reason}")
    return run_id

"""`cmp push`: upload an offline bundle to a compare server, once.

The bundle's id is the run's client key, so pushing the same bundle again returns the run it
made the first time; a push that was cut off resumes with the records the server lacks.

    run_id, already = push_bundle(client, "npu-run.cmpbundle")
"""

from __future__ import annotations

from capture_agent.bundle import read_bundle
from capture_agent.capture import CaptureError


def push_bundle(client, path) -> tuple[str, bool]:
    """Returns (run id, whether the server already had the complete run)."""
    bundle = read_bundle(path)  # verified whole before anything is sent
    opened = client.open_run(bundle.fingerprint, bundle.options, bundle.prompt_set, client_key=bundle.bundle_id)
    if opened.status == "complete":
        return opened.run_id, True
    if opened.status == "failed":
        raise CaptureError(f"bundle {path} was pushed before as run {opened.run_id}, which failed: "
                           f"`cmp show {opened.run_id}` says why")
    stored = set(opened.stored_indexes)
    client.upload(opened.run_id, ((i, blob) for i, blob in bundle.records if i not in stored))
    status, reason = client.close_run(opened.run_id, len(bundle.records), bundle.digest, perf=bundle.perf)
    if status != "complete":
        raise CaptureError(f"run {opened.run_id} failed on the server: {reason}")
    return opened.run_id, False

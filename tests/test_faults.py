"""Faults: a killed agent resumes, a killed server loses nothing acknowledged and the agent finishes
the run after it restarts, SIGTERM stops gracefully, abandoned runs fail, limits hold."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import time

import grpc
import numpy as np
import pytest

from compare_server.client import Client
from conftest import CMP, ROOT, _start_server, _stop_server, capture_run, diff_json, embed_run, run_cmp
from proto import cmp_pb2 as pb
from proto import cmp_pb2_grpc
from proto.codec import encode
from proto.digests import prompt_digest

N_PROMPTS = 150


@pytest.fixture(scope="module")
def many_prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "many.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"q{i}", "text": f"Question number {i}: what is {i} times {i + 3}?"})
                              for i in range(N_PROMPTS)))
    return str(path)


def _capture_args(tiny_llama, prompts):
    return ["--model", tiny_llama, "--model-name", "tiny", "--mode", "logprobs", "--prompts", prompts,
            "--top-k", "4", "--max-new-tokens", "8"]


def _agent(address, args):
    env = {**os.environ, "CMP_UPLOAD_STREAM_SECONDS": "0.3"}
    return subprocess.Popen([CMP, "capture", "--server", address, "--quiet", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(predicate, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _open_run_with_records(address):
    with Client(address) as client:
        runs = [r for r in client.list_runs(status="open") if r["record_count"] > 0]
    return runs[0] if runs else None


def _blobs(store, run_id):
    return [r.blob for r in store.read_records(run_id)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_llama, many_prompts):
    """An uninterrupted run of the same capture, for comparison."""
    srv = _start_server(tmp_path_factory.mktemp("ref") / "cmp.db")
    run_id = capture_run(srv.address, *_capture_args(tiny_llama, many_prompts))
    blobs = _blobs(srv.store, run_id)
    _stop_server(srv)
    return blobs


def test_a_killed_agent_leaves_an_open_run_that_resume_finishes_identically(server, tiny_llama, many_prompts, reference):
    args = _capture_args(tiny_llama, many_prompts)
    agent = _agent(server.address, args)
    run = _wait(lambda: _open_run_with_records(server.address), what="acknowledged records")
    agent.send_signal(signal.SIGKILL)
    agent.wait(timeout=30)
    stored = server.store.get_run(run["id"])
    assert stored.status == "open" and 0 < stored.record_count < N_PROMPTS
    resumed = capture_run(server.address, *args, "--resume", run["id"])
    assert resumed == run["id"]
    final = server.store.get_run(run["id"])
    assert final.status == "complete" and final.record_count == N_PROMPTS
    assert _blobs(server.store, run["id"]) == reference


def test_resume_refuses_other_options(server, tiny_llama, many_prompts):
    args = _capture_args(tiny_llama, many_prompts)
    with Client(server.address) as client:
        run_id = embed_run(client, np.ones((2, 4)), ["a", "b"])
    proc = run_cmp("capture", "--server", server.address, *args, "--resume", run_id, check=False)
    assert proc.returncode == 1 and "is complete: only an open run can be resumed" in proc.stderr


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(db, port):
    proc = subprocess.Popen([CMP, "serve", "--db", f"sqlite:///{db}", "--listen", f"127.0.0.1:{port}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "listening on" in proc.stdout.readline()
    return proc


def test_a_server_killed_mid_ingest_loses_nothing_acknowledged_and_the_agent_finishes(tmp_path, tiny_llama, many_prompts, reference):
    db, port = tmp_path / "cmp.db", _free_port()
    address = f"127.0.0.1:{port}"
    server = _serve(db, port)
    agent = _agent(address, _capture_args(tiny_llama, many_prompts))
    try:
        run = _wait(lambda: _open_run_with_records(address), what="acknowledged records")
        acknowledged = run["record_count"]
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        con = sqlite3.connect(db)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        (count,) = con.execute("SELECT COUNT(*) FROM records WHERE run_id=?", (run["id"],)).fetchone()
        con.close()
        assert count >= acknowledged
        time.sleep(1.0)  # the agent meets a dead server and backs off
        server = _serve(db, port)
        out, err = agent.communicate(timeout=300)
        assert agent.returncode == 0, err
        assert out.strip().splitlines()[-1] == run["id"]
        assert "upload interrupted (UNAVAILABLE); retry" in err
    finally:
        agent.kill()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    status, records = con.execute("SELECT status, record_count FROM runs WHERE id=?", (run["id"],)).fetchone()
    blobs = [b for (b,) in con.execute("SELECT blob FROM records WHERE run_id=? ORDER BY idx", (run["id"],))]
    assert (status, records) == ("complete", N_PROMPTS) and blobs == reference


def test_sigterm_stops_the_server_gracefully_and_logs_runs_as_json(tmp_path):
    port = _free_port()
    server = _serve(tmp_path / "cmp.db", port)
    with Client(f"127.0.0.1:{port}") as client:
        run_id = embed_run(client, np.ones((2, 4)), ["a", "b"])
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0
    events = [json.loads(line.split(" cmp.server ", 1)[1]) for line in server.stderr.read().splitlines()
              if " cmp.server {" in line]
    assert [(e["event"], e["run"]) for e in events] == [("run_opened", run_id), ("run_closed", run_id)]


def test_an_abandoned_open_run_is_marked_failed(tmp_path):
    srv = _start_server(tmp_path / "cmp.db", open_run_timeout_s=0.3, reap_every_s=0.1)
    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = cmp_pb2_grpc.CompareStub(channel)
            run_id = stub.OpenRun(pb.OpenRunRequest(
                fingerprint=pb.Fingerprint(mode="embed"),
                prompt_set=pb.PromptSet(name="t", digest=prompt_digest([("a", "x")]), prompts=[pb.Prompt(id="a", text="x")]),
            ), timeout=10).run_id
        run = _wait(lambda: (r := srv.store.get_run(run_id)).status == "failed" and r, timeout=10, what="the reaper")
        assert run.status_reason.startswith("abandoned")
    finally:
        _stop_server(srv)


def _raw_open(stub, n):
    prompts = [(f"p{i}", f"t{i}") for i in range(n)]
    return stub.OpenRun(pb.OpenRunRequest(
        fingerprint=pb.Fingerprint(mode="embed"),
        prompt_set=pb.PromptSet(name="t", digest=prompt_digest(prompts), prompts=[pb.Prompt(id=i, text=t) for i, t in prompts]),
    ), timeout=10).run_id


def test_messages_and_runs_over_the_size_limits_are_refused(tmp_path):
    srv = _start_server(tmp_path / "cmp.db", max_message_mb=1, max_run_mb=2)
    try:
        with grpc.insecure_channel(srv.address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
            stub = cmp_pb2_grpc.CompareStub(channel)
            run_id = _raw_open(stub, 4)
            big = encode({"embedding": np.ones(400_000, np.float32)})  # 1.6 MB: over the message limit
            with pytest.raises(grpc.RpcError) as e:
                stub.UploadRecords(iter([pb.RecordBatch(run_id=run_id, records=[pb.Record(index=0, blob=big)])]), timeout=10)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            part = encode({"embedding": np.ones(200_000, np.float32)})  # 0.8 MB each: the third passes 2 MB
            for i in range(2):
                stub.UploadRecords(iter([pb.RecordBatch(run_id=run_id, records=[pb.Record(index=i, blob=part)])]), timeout=10)
            with pytest.raises(grpc.RpcError) as e:
                stub.UploadRecords(iter([pb.RecordBatch(run_id=run_id, records=[pb.Record(index=2, blob=part)])]), timeout=10)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-run-mb" in e.value.details()
        assert srv.store.get_run(run_id).record_count == 2
    finally:
        _stop_server(srv)


def test_nan_and_inf_are_stored_counted_and_shown_by_diff(server):
    with Client(server.address) as client:
        good = np.random.default_rng(0).normal(size=(3, 8))
        bad = good.copy()
        bad[1, 2], bad[2, 0] = np.nan, np.inf
        a = embed_run(client, good, ["x", "y", "z"])
        b = embed_run(client, bad, ["x", "y", "z"])
    report = diff_json(server.address, a, b)
    assert report["summary"]["nonfinite_b"] == 2 and report["verdict"] == "FAIL"
    assert any("2 NaN or infinite values" in n for n in report["notes"])
    assert report["per_prompt"][0]["cos"] == pytest.approx(1.0) and report["per_prompt"][1]["cos"] is None

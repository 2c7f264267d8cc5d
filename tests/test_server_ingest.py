"""The gRPC server, driven through the raw stubs: good uploads complete, bad ones get a precise
status and store nothing."""

import grpc
import numpy as np
import pytest

from proto import cmp_pb2 as pb
from proto import cmp_pb2_grpc
from proto.codec import encode
from proto.digests import prompt_digest, record_sha256, run_digest

PROMPTS = [("a", "first"), ("b", "second"), ("c", "third")]


@pytest.fixture
def stub(server):
    with grpc.insecure_channel(server.address) as channel:
        yield cmp_pb2_grpc.CompareStub(channel)


def _open(stub, mode="embed", prompts=PROMPTS, digest=None):
    request = pb.OpenRunRequest(
        fingerprint=pb.Fingerprint(mode=mode, model_name="m", device="cpu", dtype="float32"),
        prompt_set=pb.PromptSet(name="t", digest=digest or prompt_digest(prompts),
                                prompts=[pb.Prompt(id=i, text=t) for i, t in prompts]),
    )
    return stub.OpenRun(request, timeout=10).run_id


def _blob(i):
    return encode({"embedding": np.full(8, i + 1, np.float32)})


def _upload(stub, run_id, *batches):
    return stub.UploadRecords(
        iter(pb.RecordBatch(run_id=run_id, records=[pb.Record(index=i, blob=b) for i, b in batch]) for batch in batches),
        timeout=10,
    )


def _status(stub, run_id):
    return stub.GetRun(pb.GetRunRequest(run_id=run_id), timeout=10)


def test_records_in_several_messages_make_a_complete_run(stub):
    run_id = _open(stub)
    summary = _upload(stub, run_id, [(0, _blob(0)), (1, _blob(1))], [(2, _blob(2))])
    assert (summary.stored, summary.total) == (3, 3)
    reply = stub.CloseRun(pb.CloseRunRequest(run_id=run_id, record_count=3,
                                             digest=run_digest(record_sha256(_blob(i)) for i in range(3))), timeout=10)
    assert reply.status == "complete"
    assert _status(stub, run_id).status == "complete"


def test_a_corrupt_blob_is_invalid_argument_and_its_whole_message_is_dropped(stub):
    run_id = _open(stub)
    with pytest.raises(grpc.RpcError) as e:
        _upload(stub, run_id, [(0, _blob(0)), (1, b"\x00garbage")])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "record 1" in e.value.details()
    assert _status(stub, run_id).record_count == 0


def test_earlier_messages_of_a_failed_stream_stay_stored(stub):
    run_id = _open(stub)
    with pytest.raises(grpc.RpcError):
        _upload(stub, run_id, [(0, _blob(0))], [(1, b"broken")])
    assert _status(stub, run_id).record_count == 1


def test_a_record_of_the_wrong_kind_is_refused(stub):
    run_id = _open(stub, mode="greedy")
    with pytest.raises(grpc.RpcError) as e:
        _upload(stub, run_id, [(0, _blob(0))])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "unexpected tensors" in e.value.details()


def test_a_repeated_record_is_already_exists(stub):
    run_id = _open(stub)
    _upload(stub, run_id, [(0, _blob(0))])
    with pytest.raises(grpc.RpcError) as e:
        _upload(stub, run_id, [(0, _blob(0))])
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert _status(stub, run_id).record_count == 1


def test_uploads_to_unknown_or_closed_runs_are_refused(stub):
    with pytest.raises(grpc.RpcError) as e:
        _upload(stub, "doesnotexist", [(0, _blob(0))])
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    run_id = _open(stub)
    stub.CloseRun(pb.CloseRunRequest(run_id=run_id, abort_reason="stopped"), timeout=10)
    with pytest.raises(grpc.RpcError) as e:
        _upload(stub, run_id, [(0, _blob(0))])
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_close_whose_digest_does_not_match_fails_the_run_with_the_reason(stub):
    run_id = _open(stub)
    _upload(stub, run_id, [(i, _blob(i)) for i in range(3)])
    reply = stub.CloseRun(pb.CloseRunRequest(run_id=run_id, record_count=3, digest="ab" * 32), timeout=10)
    assert reply.status == "failed" and "digest mismatch" in reply.reason
    run = _status(stub, run_id)
    assert run.status == "failed" and run.status_reason == reply.reason


def test_a_prompt_set_whose_digest_does_not_match_its_prompts_is_refused(stub):
    with pytest.raises(grpc.RpcError) as e:
        _open(stub, digest="0" * 64)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "digest does not match" in e.value.details()


def test_an_unknown_mode_is_refused(stub):
    with pytest.raises(grpc.RpcError) as e:
        _open(stub, mode="sampling")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _complete_run(stub, prompts=PROMPTS, scale=1.0):
    run_id = _open(stub, prompts=prompts)
    blobs = [encode({"embedding": np.arange(1, 9, dtype=np.float32) * (i + 1) ** scale}) for i in range(len(prompts))]
    _upload(stub, run_id, list(enumerate(blobs)))
    stub.CloseRun(pb.CloseRunRequest(run_id=run_id, record_count=len(blobs),
                                     digest=run_digest(record_sha256(b) for b in blobs)), timeout=10)
    return run_id


def test_diffs_of_incomparable_runs_are_failed_precondition_naming_both_runs(stub):
    a = _complete_run(stub)
    other = _complete_run(stub, prompts=PROMPTS[:2])
    with pytest.raises(grpc.RpcError) as e:
        stub.DiffRuns(pb.DiffRequest(run_a=a, run_b=other), timeout=10)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert a in e.value.details() and other in e.value.details() and "different prompt sets" in e.value.details()
    still_open = _open(stub)
    with pytest.raises(grpc.RpcError) as e:
        stub.DiffRuns(pb.DiffRequest(run_a=a, run_b=still_open), timeout=10)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "is open, not complete" in e.value.details()


@pytest.mark.parametrize("arrays, message", [
    ({"embedding": np.ones(8, np.float64)}, "expected float32"),
    ({"embedding": np.ones((2, 4), np.float32)}, "expected 1 dimensions"),
    ({"vector": np.ones(8, np.float32)}, "unexpected tensors"),
])
def test_wrong_tensor_names_shapes_or_dtypes_are_invalid_argument_and_store_nothing(stub, arrays, message):
    run_id = _open(stub)
    with pytest.raises(grpc.RpcError) as e:
        _upload(stub, run_id, [(0, encode(arrays))])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in e.value.details()
    assert _status(stub, run_id).record_count == 0


def test_an_index_out_of_range_is_invalid_argument(stub):
    run_id = _open(stub)
    with pytest.raises(grpc.RpcError) as e:
        _upload(stub, run_id, [(3, _blob(3))])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "out of range 0..2" in e.value.details()

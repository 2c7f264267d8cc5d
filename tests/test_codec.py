"""Records round-trip through safetensors bytes, and broken or ill-shaped records are refused."""

import json
import struct

import numpy as np
import pytest

from proto.codec import RecordError, check, decode, encode, validate


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int64, np.int32])
def test_every_dtype_round_trips_exactly(dtype):
    a = (np.arange(24).reshape(2, 3, 4) * 1.5).astype(dtype)
    out = decode(encode({"x": a}))["x"]
    assert out.dtype == a.dtype and out.shape == a.shape
    assert np.array_equal(out, a)


def test_decode_returns_read_only_views_of_the_blob_not_copies():
    blob = encode({"embedding": np.ones(1000, np.float32)})
    out = decode(blob)["embedding"]
    assert not out.flags.writeable
    assert out.base is not None


def _logprob_record(t=3, k=4):
    return {
        "token_ids": np.arange(t, dtype=np.int64),
        "token_logprobs": np.full(t, -0.1, np.float32),
        "topk_ids": np.arange(t * k, dtype=np.int64).reshape(t, k),
        "topk_logprobs": np.full((t, k), -1.0, np.float32),
    }


def test_a_logprob_record_with_no_positions_is_valid():
    """A server that ends at once (EOS first) reports no token for that prompt."""
    validate(decode(encode(_logprob_record(t=0))), "logprobs")


def test_valid_records_of_both_kinds_pass_validation():
    validate(decode(encode({"embedding": np.ones(8, np.float32)})), "embed")
    validate(decode(encode(_logprob_record())), "logprobs")
    validate(decode(encode({**_logprob_record(), "full_logprobs": np.zeros(50, np.float32)})), "logprobs")


@pytest.mark.parametrize("blob, message", [
    (b"", "too short"),
    (b"\xff" * 16, "header length"),
    (struct.pack("<Q", 4) + b"nope", "not JSON"),
    (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
])
def test_corrupt_blobs_are_refused_with_the_reason(blob, message):
    with pytest.raises(RecordError, match=message):
        decode(blob)
    with pytest.raises(RecordError, match=message):
        check(blob, "embed")


def test_a_truncated_blob_is_refused_even_after_its_header_was_seen_whole():
    blob = encode({"embedding": np.ones(64, np.float32)})
    check(blob, "embed")
    with pytest.raises(RecordError, match="data offsets"):
        decode(blob[:-10])
    with pytest.raises(RecordError, match="data offsets"):
        check(blob[:-10], "embed")


def test_offsets_that_disagree_with_the_shape_are_refused():
    header = json.dumps({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    with pytest.raises(RecordError, match="do not match shape"):
        decode(struct.pack("<Q", len(header)) + header + b"\0" * 8)


@pytest.mark.parametrize("arrays, kind, message", [
    ({"embedding": np.ones(4, np.float64)}, "embed", "expected float32"),
    ({"embedding": np.ones((2, 4), np.float32)}, "embed", "expected 1 dimensions"),
    ({"embedding": np.ones(0, np.float32)}, "embed", "is empty"),
    ({**_logprob_record(), "topk_ids": np.zeros((3, 0), np.int64), "topk_logprobs": np.zeros((3, 0), np.float32)},
     "logprobs", "no candidates"),
    ({"vector": np.ones(4, np.float32)}, "embed", "unexpected tensors"),
    ({"embedding": np.ones(4, np.float32)}, "logprobs", "unexpected tensors"),
    ({k: v for k, v in _logprob_record().items() if k != "topk_ids"}, "logprobs", "missing tensor 'topk_ids'"),
    ({**_logprob_record(), "token_logprobs": np.zeros(2, np.float32)}, "logprobs", "has 2 positions"),
    ({**_logprob_record(), "topk_logprobs": np.zeros((3, 5), np.float32)}, "logprobs", "differ in shape"),
])
def test_records_that_do_not_fit_their_kind_are_refused(arrays, kind, message):
    with pytest.raises(RecordError, match=message):
        validate(decode(encode(arrays)), kind)
    for _ in range(2):  # ingest's fast check gives the same refusal, every time
        with pytest.raises(RecordError, match=message):
            check(encode(arrays), kind)


def test_records_sharing_a_header_decode_stacked_exactly_as_one_by_one():
    from proto.codec import decode_stacked

    rng = np.random.default_rng(0)
    blobs = [encode(_logprob_record()) for _ in range(5)] + [encode({**_logprob_record(), "topk_ids": rng.integers(0, 9, (3, 4))})]
    stacked = decode_stacked(blobs, "logprobs")
    for i, blob in enumerate(blobs):
        for name, array in decode(blob).items():
            np.testing.assert_array_equal(stacked[name][i], array)
    assert not stacked["topk_ids"].flags.writeable


def test_records_with_different_headers_are_not_stacked_and_a_wrong_kind_is_refused():
    from proto.codec import decode_stacked

    two_sizes = [encode({"embedding": np.ones(4, np.float32)}), encode({"embedding": np.ones(5, np.float32)})]
    assert decode_stacked(two_sizes, "embed") is None
    with pytest.raises(RecordError, match="unexpected tensors"):
        decode_stacked([encode(_logprob_record())] * 2, "embed")


def test_records_of_mixed_shapes_decode_together_exactly_as_one_by_one():
    from proto.codec import decode_many

    blobs = [encode(_logprob_record(t)) for t in (3, 5, 3, 0, 5, 3)]  # greedy outputs of different lengths
    decoded = decode_many(blobs, "logprobs")
    assert len(decoded) == len(blobs)
    for got, blob in zip(decoded, blobs):
        want = decode(blob)
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
    with pytest.raises(RecordError, match="unexpected tensors"):
        decode_many(blobs[:2] + [encode({"embedding": np.ones(4, np.float32)})], "logprobs")

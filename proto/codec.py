"""Record codec shared by agents and the server: named numpy arrays <-> safetensors bytes.

A record holds one prompt's outputs. Which arrays it must hold depends on the run's kind:

    embed      embedding [D] float32
    logprobs   token_ids [T] int64, token_logprobs [T] float32 (T may be 0),
               topk_ids [T,K] int64, topk_logprobs [T,K] float32,
               optional full_logprobs [V] float32 (position 0 over the whole vocabulary)

    >>> blob = encode({"embedding": np.ones(4, np.float32)})
    >>> decode(blob)["embedding"].shape
    (4,)

Decoding parses the safetensors header itself and returns read-only views into the blob,
so the server never copies tensor bytes it only needs to read.
"""

from __future__ import annotations

import functools
import json
import math
import struct

import numpy as np
from safetensors.numpy import save as _st_save

_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
}

# name -> (dtype, number of dimensions, required)
SCHEMAS: dict[str, dict[str, tuple[np.dtype, int, bool]]] = {
    "embed": {"embedding": (np.dtype("<f4"), 1, True)},
    "logprobs": {
        "token_ids": (np.dtype("<i8"), 1, True),
        "token_logprobs": (np.dtype("<f4"), 1, True),
        "topk_ids": (np.dtype("<i8"), 2, True),
        "topk_logprobs": (np.dtype("<f4"), 2, True),
        "full_logprobs": (np.dtype("<f4"), 1, False),
    },
}

_MAX_HEADER = 1 << 20


class RecordError(ValueError):
    """A record blob that is not valid safetensors or does not fit its run's kind."""


def encode(arrays: dict[str, np.ndarray]) -> bytes:
    """Serialises named arrays to safetensors bytes, in memory."""
    return _st_save({k: np.ascontiguousarray(v) for k, v in arrays.items()})


@functools.lru_cache(maxsize=4096)
def _layout(header: bytes) -> tuple[tuple[str, np.dtype, tuple[int, ...], int, int], ...]:
    """(name, dtype, shape, start, end) of each tensor, parsed once per distinct header.

    A run's records mostly share a header (same names, dtypes and shapes), so ingest and diff
    parse JSON once per shape rather than once per record.
    """
    try:
        parsed = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordError(f"safetensors header is not JSON: {e}") from None
    if not isinstance(parsed, dict):
        raise RecordError("safetensors header is not a JSON object")
    out = []
    for name, info in parsed.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            start, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise RecordError(f"tensor {name!r}: unsupported or malformed header entry {info!r}") from None
        if start < 0 or end < start or end - start != math.prod(shape) * dtype.itemsize or min(shape, default=1) < 0:
            raise RecordError(f"tensor {name!r}: data offsets {start}..{end} do not match shape {shape}")
        out.append((name, dtype, shape, start, end))
    return tuple(out)


def decode(blob: bytes | memoryview) -> dict[str, np.ndarray]:
    """Parses safetensors bytes into read-only numpy views of the blob; raises RecordError."""
    size = len(blob)
    if size < 8:
        raise RecordError(f"blob of {size} bytes is too short to be safetensors")
    (header_len,) = struct.unpack_from("<Q", blob, 0)
    if header_len > min(_MAX_HEADER, size - 8):
        raise RecordError(f"safetensors header length {header_len} does not fit a blob of {size} bytes")
    base = 8 + header_len
    out: dict[str, np.ndarray] = {}
    for name, dtype, shape, start, end in _layout(bytes(blob[8:base])):
        if base + end > size:
            raise RecordError(f"tensor {name!r}: data offsets {start}..{end} do not match shape {shape} in a blob of {size} bytes")
        out[name] = np.frombuffer(blob, dtype=dtype, count=(end - start) // dtype.itemsize, offset=base + start).reshape(shape)
    return out


def validate(arrays: dict[str, np.ndarray], kind: str) -> None:
    """Checks names, dtypes and shapes against the schema of `kind`; raises RecordError."""
    schema = SCHEMAS[kind]
    unknown = sorted(set(arrays) - set(schema))
    if unknown:
        raise RecordError(f"unexpected tensors {unknown} for a {kind} record (allowed: {sorted(schema)})")
    for name, (dtype, ndim, required) in schema.items():
        if name not in arrays:
            if required:
                raise RecordError(f"missing tensor {name!r} for a {kind} record")
            continue
        a = arrays[name]
        if a.dtype != dtype:
            raise RecordError(f"tensor {name!r} is {a.dtype}, expected {dtype}")
        if a.ndim != ndim:
            raise RecordError(f"tensor {name!r} has shape {list(a.shape)}, expected {ndim} dimensions")
    if kind == "embed" and arrays["embedding"].size == 0:
        raise RecordError("tensor 'embedding' is empty")
    if kind == "logprobs":
        # Zero positions is allowed: a server that ends at once (EOS first) reports no token.
        if arrays["token_ids"].size and arrays["topk_ids"].shape[1] == 0:
            raise RecordError("tensor 'topk_ids' has no candidates (K = 0)")
        t = arrays["token_ids"].shape[0]
        for name in ("token_logprobs", "topk_ids", "topk_logprobs"):
            if arrays[name].shape[0] != t:
                raise RecordError(f"tensor {name!r} has {arrays[name].shape[0]} positions, token_ids has {t}")
        if arrays["topk_ids"].shape != arrays["topk_logprobs"].shape:
            raise RecordError(
                f"topk_ids {list(arrays['topk_ids'].shape)} and topk_logprobs "
                f"{list(arrays['topk_logprobs'].shape)} differ in shape"
            )



@functools.lru_cache(maxsize=4096)
def _checked_span(header: bytes, kind: str) -> int:
    """Validates a header's tensors against `kind` once per distinct header; returns the bytes of
    data they span. Zero-memory stand-ins carry the shapes, so a 1 MB tensor costs nothing here."""
    layout = _layout(header)
    validate({name: np.broadcast_to(np.zeros((), dtype), shape) for name, dtype, shape, _, _ in layout}, kind)
    return max((end for *_, end in layout), default=0)


def check(blob: bytes | memoryview, kind: str) -> None:
    """What validate(decode(blob), kind) checks, without building arrays: ingest's fast path.

    A run's records mostly share a header, so this is a length check and a cache hit per record.
    Raises RecordError with decode's or validate's message.
    """
    size = len(blob)
    if size >= 8:
        (header_len,) = struct.unpack_from("<Q", blob, 0)
        if header_len <= min(_MAX_HEADER, size - 8) and 8 + header_len + _checked_span(bytes(blob[8:8 + header_len]), kind) <= size:
            return
    validate(decode(blob), kind)  # the full check: raises the precise error


def _head(blob: bytes | memoryview) -> bytes:
    """A blob's length prefix and header: what records of one shape share."""
    if len(blob) < 8:
        raise RecordError(f"blob of {len(blob)} bytes is too short to be safetensors")
    (header_len,) = struct.unpack_from("<Q", blob, 0)
    return bytes(blob[:8 + header_len])


class Stacked:
    """Records that share one header, as the store hands them over: their blobs, unjoined, and
    where each tensor lies in every one of them. arrays() joins them into [n, *shape] views (once);
    a compiled kernel can read the blobs where they are instead, copying nothing.

        stacked = stack(blobs, "logprobs")
        stacked.tensors["topk_ids"]   # (dtype, shape, byte offset in each blob)
        stacked.arrays()["topk_ids"]  # [n, T, K] int64, read-only
    """

    def __init__(self, blobs: list[bytes], head: bytes):
        self.blobs = blobs
        self.tensors = {name: (dtype, shape, len(head) + start) for name, dtype, shape, start, _ in _layout(head[8:])}
        self._arrays: dict[str, np.ndarray] | None = None

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape with the record axis first, [n, *shape]."""
        return (len(self.blobs), *self.tensors[name][1])

    def arrays(self) -> dict[str, np.ndarray]:
        """Every tensor as one read-only [n, *shape] array: one join and one strided view each."""
        if self._arrays is None:
            size, joined = len(self.blobs[0]), b"".join(self.blobs)
            self._arrays = {name: np.ndarray((len(self.blobs), *shape), dtype, joined, offset=offset,
                                             strides=(size, *np.empty(shape, dtype).strides))
                            for name, (dtype, shape, offset) in self.tensors.items()}
        return self._arrays


def stack(blobs: list[bytes], kind: str) -> Stacked | None:
    """Records that share one header, checked once as a group; None when they do not share one
    (decode them one by one instead). Raises RecordError when the shared header does not fit `kind`."""
    if not blobs:
        return None
    first = blobs[0]
    size, head = len(first), _head(first)
    if any(len(b) != size or not b.startswith(head) for b in blobs):
        return None
    check(first, kind)
    return Stacked(blobs, head)


def decode_stacked(blobs: list[bytes], kind: str) -> dict[str, np.ndarray] | None:
    """Records that share one header, decoded together into read-only arrays with a leading record
    axis ([n, *shape]): one validation, one join and one strided view per tensor instead of n
    decodes. None when the blobs do not share a header (decode them one by one instead).

    Raises RecordError when the shared header does not fit `kind`.
    """
    stacked = stack(blobs, kind)
    return None if stacked is None else stacked.arrays()


def decode_many(blobs: list[bytes], kind: str) -> list[dict[str, np.ndarray]]:
    """Records of mixed shapes (greedy outputs of different lengths), each decoded into read-only
    arrays: the records that share a header are decoded together with decode_stacked, which costs
    about half of decoding them one by one.

    Raises RecordError when a record does not fit `kind`; it does not say which record.
    """
    groups: dict[bytes, list[int]] = {}
    for i, blob in enumerate(blobs):
        groups.setdefault(_head(blob), []).append(i)
    out: list[dict[str, np.ndarray]] = [{}] * len(blobs)
    for members in groups.values():
        stacked = decode_stacked([blobs[i] for i in members], kind)
        if stacked is None:  # one header, different lengths: not records cmp wrote
            raise RecordError("records share a header but differ in length")
        for row, i in enumerate(members):
            out[i] = {name: values[row] for name, values in stacked.items()}
    return out

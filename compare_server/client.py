"""Client of the compare server, used by capture agents and the CLI (grpc only: no torch, no SQLAlchemy).

    client = Client("127.0.0.1:50051")
    run_id = client.open_run(fingerprint, options, prompt_set)
    client.upload(run_id, records)          # iterable of (index, blob)
    client.close_run(run_id, count, digest)
    report = client.diff("3f9c0a", "a71b22")
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import grpc

from proto import cmp_pb2 as pb
from proto import cmp_pb2_grpc
from proto.messages import fingerprint_to_pb, perf_to_pb, run_from_pb

# Records are batched into messages of about this size: one gRPC stream carries ~15 MB/s in
# 3 KB messages but hundreds of MB/s in messages of 300 KB and more.
BATCH_BYTES = 1 << 20
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
QUERY_TIMEOUT_S = 120.0
UPLOAD_TIMEOUT_S = 600.0


class OpenedRun(NamedTuple):
    run_id: str
    existing: bool  # the client key named a run the server already had
    status: str
    stored_indexes: list[int]


def _opened(reply: pb.OpenRunReply) -> OpenedRun:
    return OpenedRun(reply.run_id, reply.existing, reply.status, list(reply.stored_indexes))


class ServerError(Exception):
    """An rpc that failed; `code` is the grpc.StatusCode, the message is the server's."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def batch_records(records: Iterable[tuple[int, bytes]], run_id: str, batch_bytes: int = BATCH_BYTES) -> Iterator[pb.RecordBatch]:
    """Groups whole records into messages of about batch_bytes (a larger record goes alone)."""
    batch: list[pb.Record] = []
    size = 0
    for index, blob in records:
        if batch and size + len(blob) > batch_bytes:
            yield pb.RecordBatch(run_id=run_id, records=batch)
            batch, size = [], 0
        batch.append(pb.Record(index=index, blob=blob))
        size += len(blob)
    if batch:
        yield pb.RecordBatch(run_id=run_id, records=batch)


@dataclass(frozen=True)
class Connection:
    """Where the compare server is and how to talk to it: bearer token, TLS root certificate."""

    address: str
    token: str = ""
    tls_ca: bytes = b""

    @classmethod
    def from_options(cls, address: str, token_file: str = "", tls_ca_file: str = "") -> "Connection":
        """From CLI options; the token falls back to $CMP_TOKEN, the CA to $CMP_TLS_CA."""
        token = pathlib.Path(token_file).read_text().strip() if token_file else os.environ.get("CMP_TOKEN", "")
        ca_file = tls_ca_file or os.environ.get("CMP_TLS_CA", "")
        return cls(address, token, pathlib.Path(ca_file).read_bytes() if ca_file else b"")


class Client:
    def __init__(self, server: str | Connection):
        conn = server if isinstance(server, Connection) else Connection(server)
        self.address = conn.address
        self._metadata = (("authorization", f"Bearer {conn.token}"),) if conn.token else ()
        options = [
            ("grpc.max_receive_message_length", 4 * MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Reconnect quickly after a server restart: the uploader's own backoff paces retries.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        if conn.tls_ca:
            self._channel = grpc.secure_channel(conn.address, grpc.ssl_channel_credentials(conn.tls_ca), options)
        else:
            self._channel = grpc.insecure_channel(conn.address, options)
        self._stub = cmp_pb2_grpc.CompareStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method, request, timeout: float = QUERY_TIMEOUT_S):
        try:
            return method(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            code = e.code()
            if code == grpc.StatusCode.UNAVAILABLE and "database" not in (e.details() or ""):
                raise ServerError(code, f"cannot reach the compare server at {self.address} ({e.details()}): "
                                        "start one with `cmp serve` or pass --server HOST:PORT") from None
            raise ServerError(code, e.details() or code.name) from None

    # -- capture ----------------------------------------------------------------------------

    def open_run(self, fingerprint: dict[str, str], options: dict[str, str], prompt_set, client_key: str = "") -> OpenedRun:
        request = pb.OpenRunRequest(
            fingerprint=fingerprint_to_pb(fingerprint, options),
            prompt_set=pb.PromptSet(name=prompt_set.name, digest=prompt_set.digest),
            client_key=client_key,
        )
        add = request.prompt_set.prompts.add  # in place: a third of the time of building each Prompt first
        for p in prompt_set.prompts:
            add(id=p.id, text=p.text)
        return _opened(self._call(self._stub.OpenRun, request))

    def upload(self, run_id: str, records: Iterable[tuple[int, bytes]]) -> pb.UploadSummary:
        """One stream of (index, blob) records, batched; the iterable may be produced while it streams.

        capture_agent.uploader keeps each stream short (a few seconds of records), retries and
        resumes; the deadline bounds a stream whose records stop coming.
        """
        return self._call(self._stub.UploadRecords, batch_records(records, run_id), timeout=UPLOAD_TIMEOUT_S)

    def resume_run(self, run_id: str) -> OpenedRun:
        return _opened(self._call(self._stub.ResumeRun, pb.GetRunRequest(run_id=run_id)))

    def close_run(self, run_id: str, record_count: int, digest: str, abort_reason: str = "",
                  perf: list[dict] | None = None) -> tuple[str, str]:
        request = pb.CloseRunRequest(run_id=run_id, record_count=record_count, digest=digest,
                                     abort_reason=abort_reason, perf=perf_to_pb(perf or []))
        reply = self._call(self._stub.CloseRun, request)
        return reply.status, reply.reason

    # -- queries ----------------------------------------------------------------------------

    def get_records(self, run_id: str) -> Iterator[tuple[int, bytes]]:
        """A stored run's (index, blob) records in index order, streamed."""
        try:
            for rec in self._stub.GetRecords(pb.GetRecordsRequest(run_id=run_id), timeout=QUERY_TIMEOUT_S,
                                             metadata=self._metadata):
                yield rec.index, rec.blob
        except grpc.RpcError as e:
            raise ServerError(e.code(), e.details() or e.code().name) from None

    def list_runs(self, limit: int = 0, **filters) -> list[dict]:
        """Runs newest first; filters are ListRunsRequest's fields (model, device, where=[...], ...)."""
        request = pb.ListRunsRequest(limit=limit, **filters)
        return [run_from_pb(r) for r in self._call(self._stub.ListRuns, request).runs]

    def get_run(self, run_id: str) -> dict:
        return run_from_pb(self._call(self._stub.GetRun, pb.GetRunRequest(run_id=run_id)))

    def diff(self, run_a: str, run_b: str, thresholds: dict[str, float] | None = None, detail: bool = False) -> dict:
        request = pb.DiffRequest(run_a=run_a, run_b=run_b, thresholds=thresholds or {}, detail=detail)
        reply = self._call(self._stub.DiffRuns, request)
        return json.loads(reply.report_json)

    def history(self, model: str, device: str = "", baseline: str = "cpu:float32", tolerance: float = 0.001,
                where: list[str] | None = None, thresholds: dict[str, float] | None = None) -> dict:
        request = pb.HistoryRequest(model=model, device=device, baseline=baseline, regression_tolerance=tolerance,
                                    where=where or [], thresholds=thresholds or {})
        return json.loads(self._call(self._stub.History, request).report_json)

    def matrix(self, run_ids: list[str], metric: str = "") -> dict:
        reply = self._call(self._stub.Matrix, pb.MatrixRequest(run_ids=run_ids, metric=metric))
        return json.loads(reply.report_json)

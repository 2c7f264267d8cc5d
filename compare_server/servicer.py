"""gRPC servicer: thin. Each rpc turns a message into a library call and domain errors into statuses."""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager

import grpc

from compare_server import errors
from compare_server.diff import diff_runs
from compare_server.entities import Run
from compare_server.history import model_history, run_matrix
from compare_server.ingest import prepare_batch
from compare_server.prefetch import Prefetched
from compare_server.runs import find_runs, run_filter
from compare_server.store.store import StoreError
from proto import cmp_pb2 as pb
from proto import cmp_pb2_grpc
from proto.digests import canonical_digest, canonical_prompts
from proto.messages import fingerprint_from_pb, fingerprint_to_pb, perf_from_pb, perf_to_pb

log = logging.getLogger("cmp.server")

# Most specific first: DuplicateRecord is a Conflict.
STATUS = (
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.DuplicateRecord, grpc.StatusCode.ALREADY_EXISTS),
    (errors.Ambiguous, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.TooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.CannotCompare, grpc.StatusCode.FAILED_PRECONDITION),
    (StoreError, grpc.StatusCode.UNAVAILABLE),
)


@contextmanager
def _statuses(context: grpc.ServicerContext):
    try:
        yield
    except errors.CmpError as e:
        code = next((c for cls, c in STATUS if isinstance(e, cls)), grpc.StatusCode.INTERNAL)
        context.abort(code, str(e))


def run_to_pb(run: Run, perf: list[dict] = ()) -> pb.Run:
    return pb.Run(
        run_id=run.id, status=run.status, status_reason=run.status_reason,
        created=run.created_at.isoformat(timespec="seconds") + "Z",
        completed=run.completed_at.isoformat(timespec="seconds") + "Z" if run.completed_at else "",
        record_count=run.record_count, prompt_set_name=run.prompt_set_name,
        prompt_set_digest=run.prompt_set_digest, prompt_count=run.prompt_count,
        fingerprint=fingerprint_to_pb(run.fingerprint, run.options), perf=perf_to_pb(perf),
    )


class CompareServicer(cmp_pb2_grpc.CompareServicer):
    def __init__(self, store, max_run_bytes: int = 0):
        self.store = store
        self.max_run_bytes = max_run_bytes

    def OpenRun(self, request, context):
        with _statuses(context):
            ps = request.prompt_set
            if not ps.prompts:
                raise errors.InvalidInput("the prompt set is empty")
            prompts = [{"id": p.id, "text": p.text} for p in ps.prompts]
            canonical = canonical_prompts(prompts)
            if canonical_digest(canonical) != ps.digest:
                raise errors.InvalidInput(f"prompt set {ps.name!r}: digest does not match its prompts")
            fingerprint, options = fingerprint_from_pb(request.fingerprint)
            if fingerprint["mode"] not in ("embed", "greedy", "forced"):
                raise errors.InvalidInput(f"unknown mode {fingerprint['mode']!r}: expected embed, greedy or forced")
            run_id, existing = self.store.open_run(
                fingerprint, options, ps.name, ps.digest, prompts, client_key=request.client_key,
                prompts_json=canonical,
            )
            if existing:
                run = self.store.get_run(run_id)
                if run.prompt_set_digest != ps.digest:
                    raise errors.Conflict(f"client key {request.client_key!r} belongs to run {run_id}, which has other prompts")
                return pb.OpenRunReply(run_id=run_id, existing=True, status=run.status,
                                       stored_indexes=self.store.stored_indexes(run_id))
            log.info(json.dumps({"event": "run_opened", "run": run_id, "model": fingerprint["model_name"],
                                 "device": fingerprint["device"], "dtype": fingerprint["dtype"],
                                 "mode": fingerprint["mode"], "prompts": len(ps.prompts)}))
            return pb.OpenRunReply(run_id=run_id, status="open")

    def ResumeRun(self, request, context):
        with _statuses(context):
            run = self.store.get_run(request.run_id)
            if run.status != "open":
                raise errors.Conflict(f"run {run.id} is {run.status}: only an open run can be resumed")
            return pb.OpenRunReply(run_id=run.id, existing=True, status=run.status,
                                   stored_indexes=self.store.stored_indexes(run.id))

    def UploadRecords(self, request_iterator, context):
        with _statuses(context):
            stored, total, kinds = 0, 0, {}
            # The next message is received, checked and hashed while this one is committed.
            prepared = (prepare_batch(self.store, batch.run_id, batch.records, kinds) for batch in request_iterator)
            with Prefetched(prepared, join=False) as batches:
                for run_id, rows in batches:
                    total = self.store.add_records(run_id, rows, max_run_bytes=self.max_run_bytes)
                    stored += len(rows)
            return pb.UploadSummary(stored=stored, total=total)

    def GetRecords(self, request, context):
        with _statuses(context):
            run = self.store.get_run(request.run_id)
            for chunk in self.store.iter_records(run.id):  # streamed: a large run is never held whole
                for rec in chunk:
                    yield pb.Record(index=rec.index, blob=rec.blob)

    def CloseRun(self, request, context):
        with _statuses(context):
            if request.perf and not request.abort_reason:
                self.store.add_perf(request.run_id, perf_from_pb(request.perf))
            status, reason = self.store.close_run(
                request.run_id, request.record_count, request.digest, request.abort_reason
            )
            log.info(json.dumps({"event": f"run_{'closed' if status == 'complete' else 'failed'}",
                                 "run": request.run_id, "records": request.record_count, "reason": reason}))
            return pb.CloseRunReply(status=status, reason=reason)

    def ListRuns(self, request, context):
        with _statuses(context):
            filters = run_filter(
                model=request.model, device=request.device, dtype=request.dtype, backend=request.backend,
                mode=request.mode, label=request.label, status=request.status, since=request.since,
                until=request.until, where=tuple(request.where), limit=request.limit,
            )
            return pb.ListRunsReply(runs=[run_to_pb(r) for r in find_runs(self.store, filters)])

    def GetRun(self, request, context):
        with _statuses(context):
            run = self.store.get_run(request.run_id)
            return run_to_pb(run, self.store.get_perf([run.id]).get(run.id, []))

    def DiffRuns(self, request, context):
        with _statuses(context):
            report = diff_runs(self.store, request.run_a, request.run_b, dict(request.thresholds), request.detail)
            return pb.DiffReply(report_json=json.dumps(report, ensure_ascii=False))

    def History(self, request, context):
        with _statuses(context):
            where = run_filter(where=tuple(request.where)).where
            report = model_history(self.store, request.model, request.device, request.baseline or "cpu:float32",
                                   request.regression_tolerance, where, dict(request.thresholds))
            return pb.ReportReply(report_json=json.dumps(report, ensure_ascii=False))

    def Matrix(self, request, context):
        with _statuses(context):
            report = run_matrix(self.store, list(request.run_ids), request.metric)
            return pb.ReportReply(report_json=json.dumps(report, ensure_ascii=False))

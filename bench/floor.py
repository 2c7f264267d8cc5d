"""The floor of this architecture for ingest: the least a gRPC + SQLite server can do with the bytes.

One client-streaming rpc receives RecordBatch messages of about 1 MB and inserts their records
into SQLite (WAL, one transaction a message) with plain sqlite3: no validation, no hashing, no
ORM. `bench/run.py` reports cmp's ingest as a ratio to this, measured in the same run.

    python bench/floor.py serve DB_PATH          # prints the port, serves until killed
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from concurrent import futures

import grpc

from proto import cmp_pb2 as pb

METHOD = "/floor.Floor/Upload"


def serve(db_path: str) -> None:
    con = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
    con.execute("PRAGMA page_size=16384")  # as cmp's store creates its files
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE IF NOT EXISTS records (run_id TEXT, idx INTEGER, blob BLOB, PRIMARY KEY (run_id, idx))")
    lock = threading.Lock()

    def upload(request_iterator, context):
        count = 0
        for batch in request_iterator:
            with lock:
                con.execute("BEGIN")
                con.executemany("INSERT INTO records VALUES (?, ?, ?)",
                                [(batch.run_id, r.index, r.blob) for r in batch.records])
                con.execute("COMMIT")
            count += len(batch.records)
        return pb.UploadSummary(stored=count, total=count)

    handler = grpc.method_handlers_generic_handler("floor.Floor", {
        "Upload": grpc.stream_unary_rpc_method_handler(
            upload, request_deserializer=pb.RecordBatch.FromString,
            response_serializer=pb.UploadSummary.SerializeToString),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def upload(address: str, run_id: str, records) -> int:
    """Streams (index, blob) records to a floor server in ~1 MB messages; returns how many it stored."""
    from compare_server.client import batch_records

    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        call = channel.stream_unary(METHOD, request_serializer=pb.RecordBatch.SerializeToString,
                                    response_deserializer=pb.UploadSummary.FromString)
        return call(batch_records(records, run_id, batch_bytes=1 << 20), timeout=600).stored


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "serve":
        raise SystemExit(__doc__)
    serve(sys.argv[2])

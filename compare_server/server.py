"""Starts the compare server: a gRPC server over a store.

    server, port = start_server("sqlite:///./cmp-data/cmp.db", "127.0.0.1:0")
    ...
    server.stop(grace=5)
"""

from __future__ import annotations

from concurrent import futures

import grpc

from compare_server.servicer import CompareServicer
from compare_server.store.store import Store
from proto import cmp_pb2_grpc

# A message carries whole records batched to about 1 MB; a full-vocabulary record of a large
# vocabulary (250k x 4 bytes) fits many times over.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ListenError(RuntimeError):
    """The server could not bind its address."""


def start_server(db_url: str, listen: str, workers: int = 16):
    """Opens the store and starts serving; returns (server, bound port). Port 0 picks a free one."""
    store = Store(db_url)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", 4 * MAX_MESSAGE_BYTES),
        ],
    )
    cmp_pb2_grpc.add_CompareServicer_to_server(CompareServicer(store), server)
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as e:
        raise ListenError(f"cannot listen on {listen}: {e}") from None
    if port == 0:
        raise ListenError(f"cannot listen on {listen}: address in use or not valid")
    server.start()
    server.store = store
    return server, port

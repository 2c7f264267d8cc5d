"""Starts the compare server: a gRPC server over a store, with auth, TLS, health and reflection.

    server = start_server(ServerConfig(db_url="sqlite:///./cmp-data/cmp.db", listen="127.0.0.1:0"))
    server.port, server.address
    server.shutdown(grace=10)

Who may talk to it: with a token, every Compare rpc needs `authorization: Bearer TOKEN` (health
checks stay open, for load balancers); with a certificate and key, it speaks TLS only. A server
on an address other than loopback needs one of the two, or an explicit insecure=True.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from compare_server.servicer import CompareServicer
from compare_server.store.store import Store
from proto import cmp_pb2, cmp_pb2_grpc

log = logging.getLogger("cmp.server")
MB = 1024 * 1024
SERVICE = cmp_pb2.DESCRIPTOR.services_by_name["Compare"].full_name


class ListenError(RuntimeError):
    """The server could not or would not bind its address."""


@dataclass
class ServerConfig:
    db_url: str
    listen: str = "127.0.0.1:50051"
    token: str = ""  # required bearer token; "" means none
    tls_cert: bytes = b""  # PEM certificate chain and key: TLS when both are given
    tls_key: bytes = b""
    insecure: bool = False  # allow a non-loopback address with neither token nor TLS
    # A message carries whole records batched to about 1 MB; a full-vocabulary record of a
    # 250k vocabulary is 1 MB. 64 MB leaves room for odd models without inviting abuse.
    max_message_mb: int = 64
    max_run_mb: int = 16 * 1024  # a run's stored records, all together
    open_run_timeout_s: float = 6 * 3600.0  # open runs idle this long are marked failed
    reap_every_s: float = 60.0
    workers: int = 16


def is_loopback(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuses every Compare rpc without `authorization: Bearer <token>`, before any handler runs."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token: pass --token-file or set CMP_TOKEN")

        self._deny = {
            (False, False): grpc.unary_unary_rpc_method_handler(deny),
            (True, False): grpc.stream_unary_rpc_method_handler(deny),
            (False, True): grpc.unary_stream_rpc_method_handler(deny),
            (True, True): grpc.stream_stream_rpc_method_handler(deny),
        }

    def intercept_service(self, continuation, handler_call_details):
        if not handler_call_details.method.startswith(f"/{SERVICE}/"):
            return continuation(handler_call_details)  # health and reflection stay open
        sent = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(sent.encode(), self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return self._deny[(handler.request_streaming, handler.response_streaming)]


class CompareServer:
    """A running server: its gRPC server, store, health and the reaper of abandoned runs."""

    def __init__(self, config: ServerConfig):
        if not config.insecure and not config.token and not (config.tls_cert and config.tls_key) \
                and not is_loopback(config.listen):
            raise ListenError(f"refusing to listen on {config.listen} with neither a token nor TLS: "
                              "pass --token-file and/or --tls-cert/--tls-key, or --insecure on a trusted network")
        self.config = config
        self.store = Store(config.db_url, background_checkpoints=True)
        interceptors = [TokenInterceptor(config.token)] if config.token else []
        self.grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.workers),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", config.max_message_mb * MB),
                ("grpc.max_send_message_length", 4 * config.max_message_mb * MB),
            ],
        )
        cmp_pb2_grpc.add_CompareServicer_to_server(CompareServicer(self.store, config.max_run_mb * MB), self.grpc)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self.grpc)
        try:
            if config.tls_cert and config.tls_key:
                creds = grpc.ssl_server_credentials([(config.tls_key, config.tls_cert)])
                self.port = self.grpc.add_secure_port(config.listen, creds)
            else:
                self.port = self.grpc.add_insecure_port(config.listen)
        except RuntimeError as e:
            raise ListenError(f"cannot listen on {config.listen}: {e}") from None
        if self.port == 0:
            raise ListenError(f"cannot listen on {config.listen}: address in use or not valid")
        self.address = f"{config.listen.rsplit(':', 1)[0]}:{self.port}"
        self._stopping = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="cmp-reaper", daemon=True)

    def start(self) -> "CompareServer":
        self.grpc.start()
        for name in ("", SERVICE):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._reaper.start()
        return self

    def _reap(self) -> None:
        while not self._stopping.wait(self.config.reap_every_s):
            try:
                for run_id in self.store.fail_stale_runs(self.config.open_run_timeout_s):
                    log.info(json.dumps({"event": "run_failed", "run": run_id, "reason": "abandoned"}))
            except Exception as e:  # noqa: BLE001  the reaper must outlive a database hiccup
                log.warning(json.dumps({"event": "reaper_error", "error": str(e)}))

    def shutdown(self, grace: float | None = 10.0) -> None:
        """Stops taking rpcs, lets in-flight ones finish for up to `grace` seconds, closes the store.

        An upload cut off here leaves its run open with every acknowledged record stored: the
        agent resumes it.
        """
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        self.grpc.stop(grace).wait()
        self.store.close()


def start_server(config: ServerConfig) -> CompareServer:
    """Opens the store and starts serving. A port of 0 picks a free one (see .port)."""
    return CompareServer(config).start()

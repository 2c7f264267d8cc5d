"""Who may talk to the server: bearer tokens, TLS, and no open non-loopback server by accident."""

import subprocess

import grpc
import numpy as np
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from cli.main import cli
from compare_server.client import Client, Connection, ServerError
from compare_server.server import ListenError, ServerConfig, start_server
from conftest import _start_server, _stop_server, embed_run
from proto import cmp_pb2 as pb
from proto import cmp_pb2_grpc

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def token_server(tmp_path):
    srv = _start_server(tmp_path / "cmp.db", token=TOKEN)
    yield srv
    _stop_server(srv)


def _open_request():
    from proto.digests import prompt_digest

    return pb.OpenRunRequest(fingerprint=pb.Fingerprint(mode="embed"),
                             prompt_set=pb.PromptSet(name="t", digest=prompt_digest([("a", "x")]),
                                                     prompts=[pb.Prompt(id="a", text="x")]))


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)])
def test_a_missing_or_wrong_token_is_unauthenticated_and_stores_nothing(token_server, metadata):
    with grpc.insecure_channel(token_server.address) as channel:
        stub = cmp_pb2_grpc.CompareStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            stub.OpenRun(_open_request(), metadata=metadata, timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as e:
            stub.UploadRecords(iter([pb.RecordBatch(run_id="x")]), metadata=metadata, timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as e:
            stub.ListRuns(pb.ListRunsRequest(), metadata=metadata, timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert token_server.store.list_runs() == []


def test_the_right_token_from_a_file_or_the_environment_is_let_in(token_server, tmp_path, monkeypatch):
    with Client(Connection(token_server.address, token=TOKEN)) as client:
        run_id = embed_run(client, np.ones((2, 4)), ["a", "b"])
    (tmp_path / "token").write_text(TOKEN + "\n")
    out = CliRunner().invoke(cli, ["runs", "--server", token_server.address, "--token-file", str(tmp_path / "token")])
    assert out.exit_code == 0 and run_id in out.output
    monkeypatch.setenv("CMP_TOKEN", TOKEN)
    assert run_id in CliRunner().invoke(cli, ["runs", "--server", token_server.address]).output
    monkeypatch.delenv("CMP_TOKEN")
    refused = CliRunner().invoke(cli, ["runs", "--server", token_server.address])
    assert refused.exit_code == 1 and "missing or wrong token" in refused.output


def test_health_checks_and_reflection_answer_without_a_token(token_server):
    with grpc.insecure_channel(token_server.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="cmp.v1.Compare"), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
        assert "cmp.v1.Compare" in services and "grpc.health.v1.Health" in services


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and localhost, made now with openssl."""
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(folder / "key.pem"),
                    "-out", str(folder / "cert.pem")], check=True, capture_output=True)
    return folder / "cert.pem", folder / "key.pem"


def test_tls_with_a_token_serves_clients_that_trust_the_certificate(tmp_path, certificate):
    cert, key = certificate
    srv = _start_server(tmp_path / "cmp.db", token=TOKEN, tls_cert=cert.read_bytes(), tls_key=key.read_bytes())
    try:
        with Client(Connection(srv.address, token=TOKEN, tls_ca=cert.read_bytes())) as client:
            run_id = embed_run(client, np.ones((2, 4)), ["a", "b"])
        (tmp_path / "token").write_text(TOKEN)
        out = CliRunner().invoke(cli, ["show", "--server", srv.address, "--token-file", str(tmp_path / "token"),
                                       "--tls-ca", str(cert), run_id])
        assert out.exit_code == 0 and "complete" in out.output
        with Client(Connection(srv.address, token=TOKEN)) as plaintext:  # no TLS: the handshake fails
            with pytest.raises(ServerError) as e:
                plaintext.list_runs()
            assert e.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        _stop_server(srv)


def test_a_non_loopback_address_needs_a_token_or_tls_or_insecure(tmp_path):
    with pytest.raises(ListenError, match="refusing to listen on 0.0.0.0:0 with neither a token nor TLS"):
        start_server(ServerConfig(db_url=f"sqlite:///{tmp_path / 'a.db'}", listen="0.0.0.0:0"))
    out = CliRunner().invoke(cli, ["serve", "--db", f"sqlite:///{tmp_path / 'b.db'}", "--listen", "0.0.0.0:0"])
    assert out.exit_code == 1 and "--insecure" in out.output
    srv = start_server(ServerConfig(db_url=f"sqlite:///{tmp_path / 'c.db'}", listen="0.0.0.0:0", insecure=True))
    srv.shutdown(grace=None)

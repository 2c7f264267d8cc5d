"""The compare server runs the same code on PostgreSQL: upload, list, diff and history over gRPC."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from compare_server.client import Client
from conftest import embed_run, fresh_postgres_database


@pytest.fixture
def pg_server(postgres_server):
    from compare_server.server import ServerConfig, start_server

    srv = start_server(ServerConfig(db_url=fresh_postgres_database(postgres_server), listen="127.0.0.1:0"))
    yield srv
    srv.shutdown(grace=None)


def test_runs_are_stored_listed_diffed_and_cached_on_postgresql(pg_server):
    rng = np.random.default_rng(2)
    base = rng.normal(size=(4, 16))
    with Client(pg_server.address) as client:
        a = embed_run(client, base, ["w", "x", "y", "z"], model_name="bge")
        b = embed_run(client, base + rng.normal(scale=1e-3, size=base.shape), ["w", "x", "y", "z"], model_name="bge",
                      device="npu:0", dtype="bfloat16", cann="8.5.1")
        assert {r["id"] for r in client.list_runs(where=["cann>=8.5"])} == {b}
        first, second = client.diff(a, b), client.diff(a, b)
    assert first["verdict"] == "PASS" and first["summary"] == second["summary"]
    out = CliRunner().invoke(cli, ["history", "--server", pg_server.address, "--model", "bge", "--format", "json"])
    rows = json.loads(out.output)["rows"]
    assert [r["run"] for r in rows] == [b] and rows[0]["baseline"] == a

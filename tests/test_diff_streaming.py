"""A diff streams both runs out of a real SQLite file a chunk at a time, reading the next chunk in
a worker thread: the result equals the metrics on the whole arrays, and a bad stored record stops
it with an error that names the run and the record, leaving no worker or open cursor behind."""

import sqlite3
import threading

import numpy as np
import pytest

from compare_server.diff import CHUNK, diff_runs
from compare_server.errors import CannotCompare, InvalidInput
from compare_server.metrics.embeddings import embedding_metrics
from compare_server.store.store import Store
from proto.codec import encode
from proto.digests import prompt_digest, record_sha256, run_digest

N = 2 * CHUNK + 37  # three chunks, the last one short
PROMPTS = [{"id": f"p{i}", "text": f"prompt {i}"} for i in range(N)]
DIGEST = prompt_digest((p["id"], p["text"]) for p in PROMPTS)


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "cmp.db"
    store = Store(f"sqlite:///{path}")
    yield store, path
    store.close()


def _run(store, embeddings, dtype="float32", mode="embed"):
    fp = {"mode": mode, "model_name": "m", "device": "cpu", "device_name": "cpu", "dtype": dtype,
          "backend": "hf", "label": ""}
    run_id, _ = store.open_run(fp, {}, "set", DIGEST, PROMPTS)
    arrays = ({"embedding": e} for e in embeddings) if mode == "embed" else embeddings
    records = [(i, blob, record_sha256(blob)) for i, blob in enumerate(encode(r) for r in arrays)]
    store.add_records(run_id, records)
    assert store.close_run(run_id, len(records), run_digest(sha for _, _, sha in records))[0] == "complete"
    return run_id


def _pair(dim=48):
    rng = np.random.default_rng(5)
    a = rng.normal(size=(N, dim)).astype(np.float32)
    return a, (a + rng.normal(scale=1e-3, size=a.shape)).astype(np.float32)


def _no_prefetch_worker_left():
    return not [t for t in threading.enumerate() if t.name == "cmp-prefetch"]


def test_a_diff_streamed_in_chunks_equals_the_metrics_on_the_whole_runs(db):
    store, _ = db
    a, b = _pair()
    report = diff_runs(store, _run(store, a), _run(store, b, "bfloat16"))
    per, summary = embedding_metrics(a, b)
    np.testing.assert_allclose([r["cos"] for r in report["per_prompt"]], per["cos"], rtol=1e-12)
    np.testing.assert_allclose([r["max_abs"] for r in report["per_prompt"]], per["max_abs"], rtol=1e-12)
    for name in ("cos_min", "mse_mean", "sim_pearson", "neighbour_overlap"):
        assert report["summary"][name] == pytest.approx(summary[name], rel=1e-9)
    assert _no_prefetch_worker_left()


def test_a_corrupt_stored_record_stops_the_diff_naming_the_run_and_record_and_releases_the_database(db):
    store, path = db
    a, b = _pair()
    run_a, run_b = _run(store, a), _run(store, b)
    with sqlite3.connect(path) as con:  # damage one record in the last chunk, as a bad disk would
        con.execute("UPDATE records SET blob = ? WHERE run_id = ? AND idx = ?", (b"\x07" * 40, run_b, N - 3))
    with pytest.raises(InvalidInput, match=f"run {run_b} record {N - 3}: safetensors header length"):
        diff_runs(store, run_a, run_b)
    assert _no_prefetch_worker_left()
    with sqlite3.connect(path) as con:  # no reader left holding the WAL: a full checkpoint goes through
        assert con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0


def test_a_corrupt_record_among_greedy_outputs_of_different_lengths_is_named(db):
    store, path = db

    def output(i, t):
        return {"token_ids": np.arange(t, dtype=np.int64), "token_logprobs": np.full(t, -0.5, np.float32),
                "topk_ids": np.arange(t * 3, dtype=np.int64).reshape(t, 3) + i,
                "topk_logprobs": np.tile(np.log([0.5, 0.3, 0.1]), (t, 1)).astype(np.float32)}

    outputs = [output(i, 4 + i % 3) for i in range(N)]  # every chunk mixes three shapes
    run_a, run_b, run_c = (_run(store, outputs, mode="greedy") for _ in range(3))
    assert diff_runs(store, run_a, run_c)["summary"]["kl"] == 0.0
    with sqlite3.connect(path) as con:
        con.execute("UPDATE records SET blob = ? WHERE run_id = ? AND idx = ?", (b"\x07" * 40, run_b, 5))
    with pytest.raises(InvalidInput, match=f"run {run_b} record 5: safetensors header length"):
        diff_runs(store, run_a, run_b)
    assert _no_prefetch_worker_left()


def test_embeddings_that_change_size_within_a_run_are_refused_naming_the_run(db):
    store, _ = db
    a, b = _pair()
    mixed = [e if i < CHUNK + 10 else np.ones(8, np.float32) for i, e in enumerate(b)]
    run_a, run_b = _run(store, a), _run(store, mixed)
    with pytest.raises(InvalidInput, match=f"run {run_b} holds embeddings of different sizes"):
        diff_runs(store, run_a, run_b)
    assert _no_prefetch_worker_left()


def test_a_diff_that_stops_early_stops_its_reader_and_closes_its_cursors(db):
    store, path = db
    a, _ = _pair(dim=48)
    run_a, run_b = _run(store, a), _run(store, a[:, :16].copy())
    with pytest.raises(CannotCompare, match="embeddings of different sizes: 48 vs 16"):
        diff_runs(store, run_a, run_b)
    assert _no_prefetch_worker_left()
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0


def test_the_reader_says_when_it_has_read_everything_so_the_kernel_may_take_every_core():
    """A logprob diff's kernel leaves the reader a core while it reads, and takes them all after."""
    import threading

    from compare_server.prefetch import Prefetched

    last_taken = threading.Event()

    def chunks():
        yield 1
        yield 2
        last_taken.wait(10)  # the reader is still reading
        yield 3

    with Prefetched(chunks(), depth=1) as items:
        assert next(items) == 1 and not items.exhausted
        assert next(items) == 2 and not items.exhausted
        last_taken.set()
        assert next(items) == 3
        with pytest.raises(StopIteration):
            next(items)
        assert items.exhausted

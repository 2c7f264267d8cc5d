"""The store keeps runs and records in a real database (a SQLite file, and a PostgreSQL server):
lifecycle, refusals that store nothing, prefix lookup, and a schema check at start-up."""

import sqlite3

from sqlalchemy import create_engine, text

import numpy as np
import pytest

from compare_server.entities import RUN_COMPLETE, RUN_FAILED, RUN_OPEN, RunFilter
from compare_server.errors import Ambiguous, Conflict, DuplicateRecord, InvalidInput, NotFound, SchemaOutOfDate
from compare_server.store.schema import head_revision
from compare_server.store.store import Store, upgrade_database
from proto.codec import encode
from proto.digests import prompt_digest, record_sha256, run_digest

# The fingerprint columns of the first schema (migration 0001).
FP = ("host", "os", "python", "torch", "torch_npu", "cann", "driver", "chip", "vllm", "vllm_ascend",
      "transformers", "backend", "device", "device_name", "dtype", "model_name", "model_digest", "mode", "label")
PROMPTS = [{"id": f"p{i}", "text": f"prompt {i}"} for i in range(3)]
DIGEST = prompt_digest((p["id"], p["text"]) for p in PROMPTS)


@pytest.fixture
def store(db_url):
    s = Store(db_url)
    yield s
    s.close()


def _records(n=3, start=0):
    out = []
    for i in range(start, start + n):
        blob = encode({"embedding": np.full(4, i, np.float32)})
        out.append((i, blob, record_sha256(blob)))
    return out


def _open(store, client_key="", **fp):
    run_id, _ = store.open_run({"mode": "embed", "model_name": "m", **fp}, {"pooling": "mean"}, "set", DIGEST,
                               PROMPTS, client_key=client_key)
    return run_id


def test_a_run_goes_from_open_to_complete_when_count_and_digest_match(store):
    run_id = _open(store, device="npu:0")
    assert store.get_run(run_id).status == RUN_OPEN
    recs = _records()
    assert store.add_records(run_id, recs) == 3
    assert store.close_run(run_id, 3, run_digest(sha for _, _, sha in recs)) == (RUN_COMPLETE, "")
    run = store.get_run(run_id)
    assert run.status == RUN_COMPLETE and run.record_count == 3 and run.completed_at is not None
    assert run.fingerprint["device"] == "npu:0" and run.options == {"pooling": "mean"}
    assert [r.blob for r in store.read_records(run_id)] == [blob for _, blob, _ in recs]
    assert store.get_prompts(DIGEST) == PROMPTS


def test_a_prompt_set_is_parsed_once_and_an_unknown_one_is_named(store):
    _open(store)
    assert store.get_prompts(DIGEST) is store.get_prompts(DIGEST)  # every diff of its runs reads it
    with pytest.raises(NotFound, match="no prompt set with digest 000000000000"):
        store.get_prompts("0" * 64)


def test_a_close_with_a_wrong_digest_or_count_fails_the_run_with_the_reason(store):
    run_id = _open(store)
    store.add_records(run_id, _records())
    status, reason = store.close_run(run_id, 3, "0" * 64)
    assert status == RUN_FAILED and "digest mismatch" in reason
    assert store.get_run(run_id).status_reason == reason

    short = _open(store)
    store.add_records(short, _records(2))
    status, reason = store.close_run(short, 2, run_digest(sha for _, _, sha in _records(2)))
    assert status == RUN_FAILED and reason == "agent sent 2 records for 3 prompts"


def test_an_aborted_close_fails_the_run_with_the_agents_reason(store):
    run_id = _open(store)
    assert store.close_run(run_id, 0, "", abort_reason="RuntimeError: out of memory") == (
        RUN_FAILED, "agent aborted: RuntimeError: out of memory")


def test_a_record_sent_twice_is_refused_and_the_batch_stores_nothing(store):
    run_id = _open(store)
    store.add_records(run_id, _records(1))
    with pytest.raises(DuplicateRecord, match="record 0 is already stored"):
        store.add_records(run_id, _records(2))  # records 0 and 1: 1 must not be stored either
    assert [r.index for r in store.read_records(run_id)] == [0]
    assert store.get_run(run_id).record_count == 1
    with pytest.raises(DuplicateRecord, match="repeats record index 2"):
        store.add_records(run_id, _records(1, 2) + _records(1, 2))


def test_an_index_out_of_range_is_refused(store):
    run_id = _open(store)
    with pytest.raises(InvalidInput, match="index 3 is out of range 0..2"):
        store.add_records(run_id, _records(1, 3))


def test_records_for_an_unknown_or_closed_run_are_refused(store):
    with pytest.raises(NotFound):
        store.add_records("nope", _records(1))
    run_id = _open(store)
    store.close_run(run_id, 0, "", abort_reason="gave up")
    with pytest.raises(Conflict, match="is failed, not open"):
        store.add_records(run_id, _records(1))


def test_runs_are_found_by_a_unique_prefix_of_their_id(store):
    ids = [_open(store) for _ in range(20)]
    assert store.get_run(ids[0][:10]).id == ids[0]
    with pytest.raises(NotFound, match="no run 'zz'"):
        store.get_run("zz")
    first_chars = [i[0] for i in ids]
    shared = next(c for c in first_chars if first_chars.count(c) > 1)
    with pytest.raises(Ambiguous, match="matches several runs"):
        store.get_run(shared)


def test_runs_are_listed_newest_first(store):
    ids = [_open(store) for _ in range(3)]
    assert [r.id for r in store.list_runs()] == ids[::-1]
    assert len(store.list_runs(RunFilter(limit=2))) == 2


def test_a_new_database_is_in_wal_mode_with_the_schema_at_head(tmp_path):
    Store(f"sqlite:///{tmp_path / 'x.db'}").close()
    con = sqlite3.connect(tmp_path / "x.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head_revision()


def test_a_database_with_an_unknown_schema_revision_is_refused_with_the_upgrade_command(db_url):
    Store(db_url).close()
    engine = create_engine(db_url)
    with engine.begin() as con:
        con.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    engine.dispose()
    with pytest.raises(SchemaOutOfDate, match="cmp db upgrade --db "):
        Store(db_url)


def test_opening_a_run_with_a_stored_client_key_returns_that_run(store):
    first = _open(store, client_key="bundle-1")
    store.add_records(first, _records(1))
    again, existing = store.open_run({"mode": "embed"}, {}, "set", DIGEST, PROMPTS, client_key="bundle-1")
    assert (again, existing) == (first, True)
    assert store.stored_indexes(first) == [0]
    assert len(store.list_runs()) == 1


def test_a_database_of_the_first_schema_with_runs_in_it_upgrades_without_losing_them(db_url):
    from compare_server.store.schema import upgrade

    engine = create_engine(db_url)
    upgrade(engine, "0001")
    with engine.begin() as con:
        con.execute(text("INSERT INTO prompt_sets VALUES ('d', '[]', 1)"))
        con.execute(text(
            "INSERT INTO runs (id, status, status_reason, created_at, prompt_set_name, prompt_set_digest, prompt_count,"
            " record_count, options_json, " + ", ".join(FP) + ") VALUES ('r1', 'complete', '', '2026-01-01 00:00:00',"
            " 'set', 'd', 1, 0, '{}', " + ", ".join("''" for _ in FP) + ")"))
    engine.dispose()
    with pytest.raises(SchemaOutOfDate, match="revision 0001"):
        Store(db_url)
    assert upgrade_database(db_url) == head_revision()
    upgraded = Store(db_url)
    run = upgraded.get_run("r1")
    assert run.status == "complete" and run.fingerprint["cuda"] == ""
    upgraded.close()


def test_a_run_uploaded_out_of_index_order_closes_with_its_digest_read_back(db_url):
    store = Store(db_url)
    run_id = _open(store)
    recs = _records()
    store.add_records(run_id, recs[2:])  # the last record first: the in-order running digest gives up
    store.add_records(run_id, recs[:2])
    assert store.close_run(run_id, 3, run_digest(sha for _, _, sha in recs)) == (RUN_COMPLETE, "")
    other = _open(store)
    store.add_records(other, recs[1:])
    store.add_records(other, recs[:1])
    status, reason = store.close_run(other, 3, run_digest(sha for _, _, sha in recs[::-1]))
    assert status == RUN_FAILED and "digest mismatch" in reason
    store.close()


def test_a_server_store_checkpoints_its_write_ahead_log_in_the_background(tmp_path):
    import time

    big = [(i, encode({"embedding": np.full(100_000, i, np.float32)}), "") for i in range(3)]
    big = [(i, blob, record_sha256(blob)) for i, blob, _ in big]  # 1.2 MB, far below SQLite's own 16 MB trigger
    sizes = {}
    for background in (False, True):
        path = tmp_path / f"bg-{background}.db"
        store = Store(f"sqlite:///{path}", background_checkpoints=background)
        store.add_records(_open(store), big)
        deadline = time.monotonic() + 5
        while background and path.stat().st_size < 1_200_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        sizes[background] = path.stat().st_size
        store.close()
    assert sizes[True] >= 1_200_000 > sizes[False]  # copied into the database file, not left in the log


def test_records_stream_in_parts_that_grow_from_the_first_size_to_the_chunk(store):
    """A diff starts its metrics on a small first part while the next is read; every record comes
    once, in index order."""
    prompts = [{"id": f"q{i}", "text": f"prompt {i}"} for i in range(100)]
    run_id, _ = store.open_run({"mode": "embed", "model_name": "m"}, {}, "set-100",
                               prompt_digest((p["id"], p["text"]) for p in prompts), prompts)
    store.add_records(run_id, _records(100))
    parts = list(store.iter_records(run_id, 32, first=4))
    assert [len(p) for p in parts] == [4, 8, 16, 32, 32, 8]
    assert [r.index for p in parts for r in p] == list(range(100))
    assert [len(p) for p in store.iter_records(run_id, 32)] == [32, 32, 32, 4]

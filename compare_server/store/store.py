"""The run store: SQLite by default (WAL), PostgreSQL for a shared server; the same code for both.

    store = Store("sqlite:///./cmp-data/cmp.db")
    run_id = store.open_run(fingerprint, options, "rag-25", digest, prompts)
    store.add_records(run_id, [(0, blob, sha256), ...])
    store.close_run(run_id, count, digest)   # -> ("complete", "") or ("failed", reason)

Every method runs in one managed session: committed on success, rolled back on any error, so a
refused request leaves nothing behind. Rows are turned into entities before they leave.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

from sqlalchemy import create_engine, event, insert, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from compare_server.entities import RUN_COMPLETE, RUN_FAILED, RUN_OPEN, Run, RunFilter, StoredRecord
from compare_server.errors import Ambiguous, CmpError, Conflict, DuplicateRecord, InvalidInput, NotFound, TooLarge
from compare_server.store.checkpoint import LOG_PAGES, Checkpointer
from compare_server.store.models import FINGERPRINT_COLUMNS, PERF_FIELDS, DiffCacheRow, PerfRow, PromptSetRow, RecordRow, RunRow
from compare_server.store.schema import ensure_schema, head_revision, upgrade
from proto.digests import extend_run_digest, run_digest

DEFAULT_URL = "sqlite:///./cmp-data/cmp.db"
PROMPT_SETS_KEPT = 16  # parsed prompt sets a store keeps (a 10,000-prompt set is ~2 MB)


class StoreError(CmpError):
    """A database failure, with the database's own message."""


def _store_error(e: SQLAlchemyError) -> StoreError:
    return StoreError(f"database error: {e.__class__.__name__}: {getattr(e, 'orig', e)}")


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cur = dbapi_connection.cursor()
    # Takes effect only when the file is created. Records are 3 KB to 256 KB blobs: on 4 KB pages
    # a 3 KB record fills a page alone and a large one chains overflow pages; 16 KB pages store
    # the bench's 10,000 x 3 KB run 1.6x faster.
    cur.execute("PRAGMA page_size=16384")
    # WAL lets queries read while an agent writes; NORMAL sync in WAL mode survives a killed
    # process (only a power cut can lose the last transactions).
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _background_checkpoints(dbapi_connection, _record) -> None:
    # The Checkpointer thread copies the log; commits only do it past LOG_PAGES, as a bound.
    dbapi_connection.execute(f"PRAGMA wal_autocheckpoint={LOG_PAGES}")


def _sqlite_file(url: str) -> str | None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return parsed.database
    return None


def _make_engine(url: str, background_checkpoints: bool = False):
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if _sqlite_file(url):
            pathlib.Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        if background_checkpoints:
            event.listen(engine, "connect", _background_checkpoints)
        return engine
    return create_engine(url, pool_pre_ping=True)


def upgrade_database(url: str) -> str:
    """Migrates the database at url to this cmp's schema; returns the revision it is at."""
    engine = _make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return head_revision()


class Store:
    def __init__(self, url: str = DEFAULT_URL, background_checkpoints: bool = False):
        """background_checkpoints: a long-running server's SQLite file is checkpointed by a thread
        (store/checkpoint.py), not by the commits that upload records."""
        self.url = url
        path = _sqlite_file(url) if background_checkpoints else None
        try:
            self.engine = _make_engine(url, background_checkpoints=path is not None)
            ensure_schema(self.engine, url)
        except SQLAlchemyError as e:
            raise StoreError(f"cannot open database {url}: {e.__class__.__name__}: {e.orig if hasattr(e, 'orig') else e}") from e
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._checkpointer = Checkpointer(path) if path else None
        self._digests: dict[str, tuple[int, object]] = {}  # run -> (records hashed in order, sha256)
        self._digest_lock = threading.Lock()
        # Prompt sets never change (a digest names their content), and every diff of a run reads
        # its set: parsing a 10,000-prompt set takes 3-4 ms, a good part of such a diff.
        self._prompt_sets: dict[str, list[dict[str, str]]] = {}

    def close(self) -> None:
        if self._checkpointer:
            self._checkpointer.stop()
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Commit on success, roll back on any error; database errors become StoreError."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except SQLAlchemyError as e:
            session.rollback()
            raise _store_error(e) from e
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # -- runs ---------------------------------------------------------------------------------

    def open_run(self, fingerprint: dict[str, str], options: dict[str, str], prompt_set_name: str,
                 prompt_set_digest: str, prompts: list[dict[str, str]], client_key: str = "",
                 prompts_json: str | None = None) -> tuple[str, bool]:
        """Stores a new open run (and its prompt set, once per digest); returns (run id, False).

        With a client_key that a stored run already has, returns (that run's id, True) instead.
        prompts_json, when the caller has it, is the prompts' JSON (saves encoding 10,000 prompts twice).
        """
        run_id = uuid.uuid4().hex[:12]
        with self.session() as s:
            if client_key:
                existing = s.scalar(select(RunRow.id).where(RunRow.client_key == client_key))
                if existing is not None:
                    return existing, True
            if s.get(PromptSetRow, prompt_set_digest) is None:
                s.add(PromptSetRow(
                    digest=prompt_set_digest,
                    prompts_json=prompts_json or json.dumps(prompts, ensure_ascii=False),
                    prompt_count=len(prompts),
                ))
            s.add(RunRow(
                id=run_id, status=RUN_OPEN, status_reason="", created_at=_now(), completed_at=None,
                prompt_set_name=prompt_set_name, prompt_set_digest=prompt_set_digest,
                prompt_count=len(prompts), record_count=0, byte_count=0, updated_at=_now(),
                options_json=json.dumps(options, sort_keys=True), client_key=client_key or None,
                **{k: fingerprint.get(k, "") for k in FINGERPRINT_COLUMNS},
            ))
        return run_id, False

    def add_records(self, run_id: str, records: list[tuple[int, bytes, str]], max_run_bytes: int = 0) -> int:
        """Stores (index, blob, sha256) records of an open run in one transaction; returns the run's total.

        Refuses the whole batch, storing none of it, if any index is out of range or already stored,
        or if the run would grow past max_run_bytes (0: no limit).
        """
        size = sum(len(blob) for _, blob, _ in records)
        with self.session() as s:
            run = self._open_run_row(s, run_id)
            if max_run_bytes and run.byte_count + size > max_run_bytes:
                raise TooLarge(f"run {run_id} would hold {run.byte_count + size} bytes, over the server's limit of "
                               f"{max_run_bytes} (cmp serve --max-run-mb)")
            indexes = [i for i, _, _ in records]
            bad = [i for i in indexes if not 0 <= i < run.prompt_count]
            if bad:
                raise InvalidInput(f"run {run_id}: record index {bad[0]} is out of range 0..{run.prompt_count - 1}")
            if len(set(indexes)) != len(indexes):
                raise DuplicateRecord(f"run {run_id}: a batch repeats record index {_first_repeat(indexes)}")
            if records:
                try:
                    # One executemany; the primary key refuses a record sent twice, no query first.
                    self._insert_records(s, [(run_id, i, sha, blob) for i, blob, sha in records])
                except IntegrityError:
                    s.rollback()
                    stored = s.scalars(select(RecordRow.idx).where(
                        RecordRow.run_id == run_id, RecordRow.idx.in_(indexes)).limit(1)).first()
                    raise DuplicateRecord(
                        f"run {run_id}: record {stored} is already stored; each record is uploaded once") from None
            # Incremented in SQL, not from the loaded row, so concurrent streams cannot lose counts.
            total = s.execute(
                update(RunRow).where(RunRow.id == run_id)
                .values(record_count=RunRow.record_count + len(records), byte_count=RunRow.byte_count + size,
                        updated_at=_now())
                .returning(RunRow.record_count)
                .execution_options(synchronize_session=False)
            ).scalar_one()
        self._extend_digest(run_id, records, total)
        return total

    def _extend_digest(self, run_id: str, records: list[tuple[int, bytes, str]], total: int) -> None:
        """Hashes a committed batch into its run's digest while the run's records arrive in index
        order (the usual upload), so closing it need not read every record back. Any other order,
        or a run this process did not see from its first record, leaves the digest to close_run."""
        with self._digest_lock:
            expected, hasher = self._digests.get(run_id, (0, None))
            in_order = expected >= 0 and total == expected + len(records) and all(
                index == expected + k for k, (index, _, _) in enumerate(records))
            if not in_order:
                self._digests[run_id] = (-1, None)
                return
            hasher = extend_run_digest(hasher or hashlib.sha256(), (sha for _, _, sha in records))
            self._digests[run_id] = (total, hasher)

    def close_run(self, run_id: str, record_count: int, digest: str, abort_reason: str = "") -> tuple[str, str]:
        """Completes an open run if the agent's count and digest match what is stored, else fails it.

        An abort_reason (the agent gave up) fails the run with that reason.
        """
        with self.session() as s:
            run = self._open_run_row(s, run_id)
            with self._digest_lock:
                hashed, hasher = self._digests.pop(run_id, (-1, None))
            if hasher is not None and hashed == run.record_count:
                stored, stored_digest = hashed, hasher.hexdigest()
            else:  # read the hashes back (Core rows, not the ORM's: there may be millions)
                hashes = s.connection().execute(
                    select(RecordRow.sha256).where(RecordRow.run_id == run_id).order_by(RecordRow.idx)).scalars().all()
                stored, stored_digest = len(hashes), run_digest(hashes)
            reason = ""
            if abort_reason:
                reason = f"agent aborted: {abort_reason}"
            elif record_count != run.prompt_count:
                reason = f"agent sent {record_count} records for {run.prompt_count} prompts"
            elif stored != record_count:
                reason = f"agent reported {record_count} records, server stored {stored}"
            elif stored_digest != digest:
                reason = "digest mismatch: the stored records differ from what the agent produced"
            run.status = RUN_FAILED if reason else RUN_COMPLETE
            run.status_reason = reason
            run.completed_at = run.updated_at = _now()
            return run.status, reason

    def fail_stale_runs(self, idle_seconds: float) -> list[str]:
        """Marks failed every open run with no activity for idle_seconds; returns their ids."""
        cutoff = _now() - timedelta(seconds=idle_seconds)
        with self.session() as s:
            stale = s.scalars(select(RunRow).where(RunRow.status == RUN_OPEN, RunRow.updated_at < cutoff)).all()
            for run in stale:
                run.status, run.completed_at = RUN_FAILED, _now()
                run.status_reason = f"abandoned: no upload for {idle_seconds:.0f} s"
        with self._digest_lock:  # a failed run is never closed: drop its running digest here
            for run in stale:
                self._digests.pop(run.id, None)
        return [r.id for r in stale]


    def get_run(self, id_or_prefix: str) -> Run:
        """The run with this id, or the only run whose id starts with it."""
        with self.session() as s:
            return _to_run(self._run_row(s, id_or_prefix))

    def list_runs(self, filters: RunFilter | None = None) -> list[Run]:
        """Runs matching the filter's column conditions, newest first.

        The version-aware `where` conditions are the caller's (compare_server.runs), since
        versions do not sort as strings in SQL.
        """
        f = filters or RunFilter()
        with self.session() as s:
            q = select(RunRow).order_by(RunRow.created_at.desc(), RunRow.id)
            for column, value in ((RunRow.model_name, f.model), (RunRow.dtype, f.dtype), (RunRow.backend, f.backend),
                                  (RunRow.mode, f.mode), (RunRow.status, f.status)):
                if value:
                    q = q.where(column == value)
            if f.device:
                q = q.where(or_(RunRow.device == f.device, RunRow.device.startswith(f.device + ":", autoescape=True),
                                RunRow.device_name.contains(f.device, autoescape=True),
                                RunRow.chip.contains(f.device, autoescape=True)))
            if f.label:
                q = q.where(RunRow.label.contains(f.label, autoescape=True))
            if f.since:
                q = q.where(RunRow.created_at >= f.since)
            if f.until:
                q = q.where(RunRow.created_at < f.until)
            if f.limit:
                q = q.limit(f.limit)
            return [_to_run(r) for r in s.scalars(q)]

    # -- records and prompts --------------------------------------------------------------------

    def iter_records(self, run_id: str, chunk: int = 256, first: int | None = None) -> Iterator[list[StoredRecord]]:
        """A run's records in index order, `chunk` at a time, streamed from the database: a diff of
        two 1 GB runs never holds either whole. With `first`, the first part holds that many and
        each next one twice as many, up to `chunk`. Core rows, not ORM ones: a third less time per
        row."""
        try:
            with self.engine.connect() as conn:
                result = conn.execution_options(yield_per=chunk).execute(
                    select(RecordRow.idx, RecordRow.sha256, RecordRow.blob)
                    .where(RecordRow.run_id == run_id).order_by(RecordRow.idx)
                )
                size = min(first or chunk, chunk)
                while rows := result.fetchmany(size):
                    yield [StoredRecord(i, sha, blob) for i, sha, blob in rows]
                    size = min(2 * size, chunk)
        except SQLAlchemyError as e:
            raise _store_error(e) from e

    def read_records(self, run_id: str) -> list[StoredRecord]:
        """All records of a run, in index order."""
        with self.session() as s:
            rows = s.execute(
                select(RecordRow.idx, RecordRow.sha256, RecordRow.blob)
                .where(RecordRow.run_id == run_id).order_by(RecordRow.idx)
            ).all()
            return [StoredRecord(i, sha, blob) for i, sha, blob in rows]

    def stored_indexes(self, run_id: str) -> list[int]:
        """Indexes of the records a run holds, ascending."""
        with self.session() as s:
            return list(s.scalars(select(RecordRow.idx).where(RecordRow.run_id == run_id).order_by(RecordRow.idx)))

    def get_prompts(self, digest: str) -> list[dict[str, str]]:
        """A prompt set's prompts ({"id", "text"}), kept after the first read: callers must not
        modify them."""
        prompts = self._prompt_sets.get(digest)
        if prompts is None:
            with self.session() as s:
                row = s.get(PromptSetRow, digest)
                if row is None:
                    raise NotFound(f"no prompt set with digest {digest[:12]}")
                prompts = json.loads(row.prompts_json)
            if len(self._prompt_sets) >= PROMPT_SETS_KEPT:
                self._prompt_sets.clear()
            self._prompt_sets[digest] = prompts
        return prompts

    # -- diff cache and perf ---------------------------------------------------------------------

    def get_cached_diff(self, run_a: str, run_b: str, metrics_version: int) -> dict | None:
        with self.session() as s:
            row = s.get(DiffCacheRow, (run_a, run_b, metrics_version))
            return json.loads(row.report_json) if row else None

    def get_cached_diffs(self, pairs: list[tuple[str, str]], metrics_version: int) -> dict[tuple[str, str], dict]:
        """Many cached diffs in one query (history over a thousand runs needs no more)."""
        wanted = set(pairs)
        with self.session() as s:
            rows = s.execute(select(DiffCacheRow.run_a, DiffCacheRow.run_b, DiffCacheRow.report_json).where(
                DiffCacheRow.metrics_version == metrics_version,
                DiffCacheRow.run_b.in_({b for _, b in wanted}),
            )).all()
            return {(a, b): json.loads(j) for a, b, j in rows if (a, b) in wanted}

    def put_cached_diff(self, run_a: str, run_b: str, metrics_version: int, report: dict) -> None:
        with self.session() as s:
            s.merge(DiffCacheRow(run_a=run_a, run_b=run_b, metrics_version=metrics_version,
                                 report_json=json.dumps(report, ensure_ascii=False), created_at=_now()))

    def add_perf(self, run_id: str, points: list[dict]) -> None:
        """Stores speed measurements of an open run (one per batch size)."""
        with self.session() as s:
            self._open_run_row(s, run_id)
            for p in points:
                s.merge(PerfRow(run_id=run_id, **p))

    def get_perf(self, run_ids: list[str]) -> dict[str, list[dict]]:
        with self.session() as s:
            rows = s.scalars(select(PerfRow).where(PerfRow.run_id.in_(run_ids)).order_by(PerfRow.batch_size)).all()
            out: dict[str, list[dict]] = {}
            for r in rows:
                out.setdefault(r.run_id, []).append({c: getattr(r, c) for c in PERF_FIELDS})
            return out


    # -- helpers (take the session) -------------------------------------------------------------

    def _insert_records(self, s: Session, rows: list[tuple]) -> None:
        """The ingest hot path. On SQLite the driver's executemany takes the rows as they are
        (SQLAlchemy's per-row parameter processing costs ~20% of ingest there); elsewhere Core."""
        if self.engine.dialect.name == "sqlite":
            s.connection().exec_driver_sql("INSERT INTO records (run_id, idx, sha256, blob) VALUES (?, ?, ?, ?)", rows)
        else:
            s.execute(insert(RecordRow.__table__), [{"run_id": r, "idx": i, "sha256": h, "blob": b} for r, i, h, b in rows])

    def _run_row(self, s: Session, id_or_prefix: str) -> RunRow:
        if not id_or_prefix:
            raise NotFound("no run id given: `cmp runs` lists them")
        row = s.get(RunRow, id_or_prefix)
        if row is not None:
            return row
        rows = s.scalars(select(RunRow).where(RunRow.id.startswith(id_or_prefix, autoescape=True)).limit(2)).all()
        if not rows:
            raise NotFound(f"no run {id_or_prefix!r}: `cmp runs` lists the stored runs")
        if len(rows) > 1:
            raise Ambiguous(f"run id prefix {id_or_prefix!r} matches several runs: give more characters")
        return rows[0]

    def _open_run_row(self, s: Session, run_id: str) -> RunRow:
        run = s.get(RunRow, run_id)
        if run is None:
            raise NotFound(f"no run {run_id!r}: open a run before uploading to it")
        if run.status != RUN_OPEN:
            raise Conflict(f"run {run_id} is {run.status}, not open: records can only be added to an open run")
        return run


def _first_repeat(values: list[int]) -> int:
    seen: set[int] = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    raise AssertionError("no repeat")


def _to_run(row: RunRow) -> Run:
    return Run(
        id=row.id, status=row.status, status_reason=row.status_reason,
        created_at=row.created_at, completed_at=row.completed_at,
        prompt_set_name=row.prompt_set_name, prompt_set_digest=row.prompt_set_digest,
        prompt_count=row.prompt_count, record_count=row.record_count, byte_count=row.byte_count,
        fingerprint={k: getattr(row, k) for k in FINGERPRINT_COLUMNS},
        options=json.loads(row.options_json),
    )

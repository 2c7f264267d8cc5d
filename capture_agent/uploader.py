"""Uploads a run's records over an unreliable connection: short acknowledged streams, retries with
backoff, and a resume that asks the server what it already has.

    Uploader(client, run_id).upload(records)   # records: (index, blob), produced as it goes

Each stream carries a few seconds of records; when it returns, everything in it is stored (the
server commits every message before reading the next). If a stream fails with a retryable status
(server restarting, connection dropped), the uploader waits (0.5 s, 1 s, 2 s, ... capped), asks the
server which indexes of the run it holds, and sends the rest. Records not yet acknowledged are
kept in a spool: in memory up to 64 MB, then in a temporary file.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable, Iterator

import grpc

from compare_server.client import ServerError

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
             grpc.StatusCode.CANCELLED}
# How many seconds of records one stream carries: shorter means less to redo after a failure.
STREAM_SECONDS = float(os.environ.get("CMP_UPLOAD_STREAM_SECONDS", "5"))
STREAM_BYTES = 256 * 1024 * 1024
RETRIES = 10
BACKOFF_S = 0.5
BACKOFF_MAX_S = 8.0


class Spool:
    """Records sent but not yet acknowledged, kept until the server has them.

    The first memory_bytes are kept as the blobs themselves (the producer made them; holding a
    reference copies nothing), the rest in a temporary file: a few seconds of records rarely spill.
    """

    def __init__(self, memory_bytes: int = 64 * 1024 * 1024):
        self._memory_bytes = memory_bytes
        self._held: list[tuple[int, bytes]] = []
        self._held_bytes = 0
        self._file = None
        self._spilled: list[tuple[int, int, int]] = []  # index, offset, length

    def add(self, index: int, blob: bytes) -> None:
        if self._held_bytes + len(blob) <= self._memory_bytes:
            self._held.append((index, blob))
            self._held_bytes += len(blob)
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="cmp-spool-")
        self._file.seek(0, 2)
        self._spilled.append((index, self._file.tell(), len(blob)))
        self._file.write(blob)

    def records(self, skip: set[int] = frozenset()) -> Iterator[tuple[int, bytes]]:
        for index, blob in list(self._held):
            if index not in skip:
                yield index, blob
        for index, offset, length in list(self._spilled):
            if index not in skip:
                self._file.seek(offset)
                yield index, self._file.read(length)

    def clear(self) -> None:
        self._held.clear()
        self._held_bytes = 0
        self._spilled.clear()
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()

    def __len__(self) -> int:
        return len(self._held) + len(self._spilled)

    def indexes(self) -> set[int]:
        return {index for index, _ in self._held} | {index for index, _, _ in self._spilled}

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class Uploader:
    def __init__(self, client, run_id: str, *, stream_seconds: float = STREAM_SECONDS, retries: int = RETRIES,
                 backoff_s: float = BACKOFF_S, sleep=time.sleep, clock=time.monotonic, log=None):
        self.client, self.run_id = client, run_id
        self.stream_seconds, self.retries, self.backoff_s = stream_seconds, retries, backoff_s
        self.sleep, self.clock, self.log = sleep, clock, log or (lambda message: None)
        self.retried = 0

    def upload(self, records: Iterable[tuple[int, bytes]], already_stored: Iterable[int] = ()) -> None:
        """Sends every record the server does not hold yet; returns once all are acknowledged.

        Records are produced here, in the caller's thread, a few seconds' worth at a time, then
        sent as one stream: the model never runs inside gRPC's request thread, so a dropped
        stream cannot leave a half-consumed producer behind.
        """
        source = iter(records)
        stored = set(already_stored)
        spool = Spool()
        try:
            exhausted = False
            while not exhausted:
                started, size = self.clock(), 0
                while self.clock() - started < self.stream_seconds and size < STREAM_BYTES:
                    try:
                        index, blob = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    if index not in stored:  # a resumed run: the server has this one
                        spool.add(index, blob)
                        size += len(blob)
                self._send(spool)
                spool.clear()
        finally:
            spool.close()

    def _send(self, spool: Spool) -> None:
        """Sends the spooled records, retrying until the server holds all of them."""
        skip: set[int] = set()
        while len(spool) > len(skip):
            try:
                self.client.upload(self.run_id, spool.records(skip=skip))
                self.retried = 0
                return
            except ServerError as e:
                if e.code not in RETRYABLE:
                    raise
                skip = self._recover(e) & spool.indexes()

    def _recover(self, error: ServerError) -> set[int]:
        """Waits with backoff until the server answers again; returns the indexes it holds."""
        while True:
            if self.retried >= self.retries:
                raise error
            delay = min(self.backoff_s * 2 ** self.retried, BACKOFF_MAX_S)
            self.retried += 1
            self.log(f"upload interrupted ({error.code.name}); retry {self.retried}/{self.retries} in {delay:.1f} s")
            self.sleep(delay)
            try:
                return set(self.client.resume_run(self.run_id).stored_indexes)
            except ServerError as e:
                if e.code not in RETRYABLE:
                    raise
                error = e

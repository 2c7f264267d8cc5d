"""Produce ahead in a worker thread: the next diff chunk is read from the database, or the next
upload message validated and hashed, while this one is computed on or committed.

SQLite, hashlib, gRPC and numpy all release the GIL for their heavy parts, so on two cores the
two sides overlap.

    with Prefetched(chunks_of(run)) as chunks:
        for chunk in chunks:
            ...
"""

from __future__ import annotations

import queue
import threading


class Prefetched:
    """Iterates what the generator `items` yields, produced up to `depth` ahead by a worker thread
    that starts at once; an exception in the worker is raised here, after the items before it.

    close() (or leaving the `with` block) stops the worker after its current item and closes
    `items` in it. With join=True it also waits for that, so no database cursor outlives a diff;
    an upload stream does not wait (its worker may be waiting for the client's next message, and
    ends with the stream).
    """

    _DONE = object()

    def __init__(self, items, depth: int = 2, join: bool = True):
        self._items, self._join = items, join
        self.exhausted = False  # every item is produced: the worker no longer needs a core
        self._slots: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._produce, name="cmp-prefetch", daemon=True)
        self._worker.start()

    def _produce(self) -> None:
        try:
            for item in self._items:
                if not self._put((item, None)):
                    return
            self.exhausted = True
            self._put((self._DONE, None))
        except BaseException as e:  # handed to the consumer and raised there
            self._put((self._DONE, e))
        finally:
            self._items.close()

    def _put(self, entry) -> bool:
        """Waits for a free slot until the consumer closes; False once it has."""
        while not self._stop.is_set():
            try:
                self._slots.put(entry, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def __iter__(self):
        return self

    def __next__(self):
        item, error = self._slots.get()
        if error is not None:
            raise error
        if item is self._DONE:
            raise StopIteration
        return item

    def close(self) -> None:
        self._stop.set()
        if self._join:
            self._worker.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

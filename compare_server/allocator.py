"""Keeps the memory a diff frees inside the process, for the next diff.

A diff allocates and frees the same tens of megabytes each time (record chunks, sampled
embeddings, similarity matrices, report rows). glibc hands freed memory at the top of its heap
back to the kernel, and allocations over its mmap threshold go straight to the kernel, so the next
diff faults every page in again: on the virtual machines we measured, 2.4 µs a page, 5,000-10,000
pages (12-24 ms) per diff of two 10,000 x 768 embedding runs. The server is one long-lived process
whose peak memory is bounded by its largest diff, so keeping that memory costs nothing extra.

    keep_freed_memory()   # once, at the start of a server process

Python's cyclic garbage collector is paused while a diff runs: see gc_paused.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 64 * 1024 * 1024  # free memory kept at the heap's top before any is returned
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's own ceiling: smaller allocations reuse the heap


def keep_freed_memory() -> bool:
    """Tunes glibc's malloc as above; False (and nothing changed) where the C library has no mallopt."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


_pauses = 0
_pauses_lock = threading.Lock()
_enabled_before = False


@contextlib.contextmanager
def gc_paused():
    """Pauses the cyclic garbage collector for the block, in any number of threads at once: it
    runs again (if it ran before) when the last of them leaves.

    A diff makes no reference cycles, but its per-position detail (four lists of up to 20,000
    numbers) and report rows are containers the collector walks again at every collection their
    allocations set off: 0.85 ms of a 22 ms logprob diff, 4% of it for nothing.

        with gc_paused():
            report = compute_diff(store, a, b)
    """
    global _pauses, _enabled_before
    with _pauses_lock:
        if _pauses == 0:
            _enabled_before = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pauses_lock:
            _pauses -= 1
            if _pauses == 0 and _enabled_before:
                gc.enable()

"""The server keeps the memory a diff frees, so the next diff does not fault its pages in again."""

import subprocess
import sys

import pytest

# Allocates and frees eight 3 MB arrays (a diff's sampled embeddings and similarity matrices are
# such arrays) three times, and prints the page faults the third time took.
PROBE = """
import resource, sys
import numpy as np
from compare_server.allocator import keep_freed_memory
kept = sys.argv[1] == "keep" and keep_freed_memory()
def work():
    arrays = [np.ones(3 << 17) for _ in range(8)]
for _ in range(2):
    work()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
work()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def probe(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1])


def test_freed_memory_is_reused_without_faulting_pages_in_again():
    kept, faults = probe("keep")
    if not kept:
        pytest.skip("this C library has no mallopt (not glibc)")
    _, untuned = probe("default")
    assert untuned > 3000  # glibc gave the 24 MB back to the kernel: ~6,000 pages to fault in again
    assert faults < 100


def test_the_garbage_collector_runs_again_when_the_last_of_several_paused_diffs_ends():
    import gc
    import threading

    from compare_server.allocator import gc_paused

    inside, release = threading.Event(), threading.Event()

    def other_diff():
        with gc_paused():
            inside.set()
            release.wait(10)

    assert gc.isenabled()
    worker = threading.Thread(target=other_diff)
    with gc_paused():
        assert not gc.isenabled()
        worker.start()
        inside.wait(10)
    assert not gc.isenabled()  # the other diff still runs
    release.set()
    worker.join()
    assert gc.isenabled()


def test_a_collector_the_user_turned_off_stays_off_after_a_diff():
    import gc

    from compare_server.allocator import gc_paused

    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()

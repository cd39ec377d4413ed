"""host.memory: the heap trim is callable on this C library and harmless to repeat; the
freeze hides what survived from full collections, and a full settle still finds a cycle among
frozen objects; one malloc arena for every thread when asked."""

from __future__ import annotations

import ctypes.util
import gc
import subprocess
import sys
import weakref

from sidecar.host import memory


def test_trim_reports_whether_the_c_library_can() -> None:
    glibc = bool(ctypes.util.find_library("c"))
    assert memory.trim() is glibc
    assert memory.trim() is glibc  # a second call finds nothing to free and still works


def test_a_full_settle_takes_what_is_alive_out_of_full_collections() -> None:
    try:
        frozen = memory.settle(full=True)
        assert frozen == gc.get_freeze_count() > 10_000  # this process: pytest and its imports
        assert gc.get_count()[2] == 0 and len(gc.get_objects(generation=2)) < frozen / 10
        kept = [[n] for n in range(1_000)]  # built after the freeze: the collector's to see
        tracked = gc.get_objects()  # what a full collection walks: not the frozen ones
        assert any(o is kept for o in tracked) and not any(o is memory for o in tracked)
        memory.settle(full=True)
        # frozen too by the next call (counting the frozen objects instead was flaky: in a
        # whole suite's worker a few of the first call's objects may die in between)
        assert gc.get_freeze_count() > frozen / 2
        assert not any(o is kept or o is kept[0] for o in gc.get_objects())
    finally:
        gc.unfreeze()  # the rest of this worker's tests run as before


def test_settle_freezes_what_survived_and_a_full_one_finds_garbage_among_the_frozen() -> None:
    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    try:
        memory.settle(full=True)
        a, b = Node(), Node()
        memory.settle(full=False)  # a and b survive: frozen now
        a.other, b.other = b, a  # a cycle among frozen objects...
        probe = weakref.ref(a)
        del a, b
        memory.settle(full=False)
        assert probe() is not None  # ...is not collected by a settle that keeps them frozen
        memory.settle(full=True)
        assert probe() is None  # the full one unfreezes first and finds it
    finally:
        gc.unfreeze()


ARENAS = """
import ctypes, sys, threading
from sidecar.host import memory
if sys.argv[1] == "one":
    assert memory.one_arena()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
def grab():  # a block from this thread's arena, kept: the arena stays in the statistics
    libc.malloc(100_000)
threads = [threading.Thread(target=grab) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc.malloc_stats()  # one "Arena N:" paragraph per arena, on stderr
"""


def test_one_arena_keeps_every_thread_on_the_main_arena() -> None:
    def arenas(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", ARENAS, mode], capture_output=True,
                              text=True, timeout=60, check=True)  # fmt: skip
        return done.stderr.count("Arena ")

    assert arenas("one") == 1
    assert arenas("default") > 1  # the test can fail: without the setting, threads get their own


MAPPED = """
import ctypes, sys
from sidecar.host import memory
if sys.argv[1] == "fixed":
    assert memory.big_blocks_mapped()
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = Info
libc.free(libc.malloc(8 << 20))  # by default this raises the threshold to 8 MB
block = libc.malloc(1 << 20)
print(libc.mallinfo2().hblkhd >= 1 << 20)  # the 1 MB block a mapping of its own?
"""


def test_big_blocks_stay_mapped_after_a_bigger_one_was_freed() -> None:
    def mapped(mode: str) -> str:
        done = subprocess.run([sys.executable, "-c", MAPPED, mode], capture_output=True,
                              text=True, timeout=60, check=True)  # fmt: skip
        return done.stdout.strip()

    assert mapped("fixed") == "True"
    assert mapped("default") == "False"  # can fail: by default glibc moves the threshold up

"""The daemon's heap: freed memory back to the kernel, long-lived objects out of the
garbage collector's way (host adapter; called by ``daemon.loop``).

CPython returns freed small objects to its own arenas and larger blocks to malloc, and glibc
keeps what malloc got back in its free lists. A burst (the first answers of 1,000 watches,
a certificate round over 5,000 servers, a large cycle) therefore leaves memory resident that
the steady state never touches again: ~18 MB at 1,000 services x 5 instances.
``malloc_trim(0)`` hands the free pages back. Elsewhere than glibc (musl, macOS) it is a
no-op: ``trim`` then returns False.

``one_arena`` keeps every thread on glibc's main malloc arena: each thread that allocates
gets an arena of its own by default (up to 8 per core), each with free lists that trimming
cannot fully empty; the daemon's threads (the flusher, status, certificate monitor) do little
allocation outside the GIL, so they gain nothing from their own arenas. Measured at 1,000 x 5
(bench/scale.py, RSS converged / after idle): 78.4 / 79.9 MB without, 74.2 / 75.9 and 77.9 /
76.4 MB with one arena (one run each; runs differ by ~2 MB).

``big_blocks_mapped`` fixes glibc's mmap threshold at 128 KiB: every block of that size or
more (a Consul answer, the ~1 MB ``show servers state`` text that drift repair reads every 30
s, the certificate report, the rendered config) is a mapping of its own, unmapped when freed.
By default glibc raises the threshold to the size of each mapped block freed (up to 32 MB),
so after the start-up burst such blocks came from the heap and their free space stayed there
between trims: at 1,000 x 5 (bench/scale.py, RSS converged / after idle, one run each)
61.4 / 63.3 MB without, 61.3 / 61.6 and 61.6 / 61.6 MB with it. It costs a map and an unmap
per big block (a few a second in a change stream).

``settle`` keeps long-lived objects out of the cyclic garbage
collector's sight (``gc.freeze``). What start-up built (modules, functions, classes, code
objects: ~56,000 objects) and the converged state of a large catalog (~100,000 at 1,000 x 5)
live for long, yet every full collection walked them with the loop's GIL held: 40 ms on the
bench's small catalog under a 50/s stream, 60-75 ms every ~1.7 s at 1,000 x 5 under 10
changes/s, and none of those collections found any garbage. So the loop, once it has been
quiet (where it trims), collects what is not frozen and freezes what survived: a collection
in a later stream walks only what changed since. Frozen objects are still freed by
reference counting; a reference cycle that forms among them after they were frozen would
outlive its use, so every ``FULL_EVERY`` a settle unfreezes first and collects everything.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)
FULL_EVERY = 3600.0  # seconds between two settles that collect the frozen objects too


M_ARENA_MAX = -8  # glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024  # glibc's default, fixed (set, it no longer moves)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def one_arena() -> bool:
    """Limit glibc to one malloc arena; True when it took the setting. Call it before the
    process starts a thread (arenas are handed out as threads first allocate)."""
    fn = getattr(_libc(), "mallopt", None)
    if fn is None:
        return False
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(fn(M_ARENA_MAX, 1))


def big_blocks_mapped() -> bool:
    """Fix glibc's mmap threshold (``MMAP_THRESHOLD``); True when it took the setting."""
    fn = getattr(_libc(), "mallopt", None)
    if fn is None:
        return False
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(fn(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    fn = getattr(_libc(), "malloc_trim", None)
    if fn is None:
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn  # type: ignore[no-any-return]


def trim() -> bool:
    """Release free heap pages; True when the C library can (whether or not any were free)."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True


def settle(full: bool) -> int:
    """Collect what is not frozen (everything when ``full``), then freeze what survived;
    returns how many objects are frozen. Costs a collection of what was not frozen: call it
    once after start-up (full) and when the loop is quiet."""
    if full:
        gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()

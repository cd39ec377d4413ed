"""Give freed heap memory back to the kernel (host adapter; called by ``daemon.loop``).

CPython returns freed small objects to its own arenas and larger blocks to malloc, and glibc
keeps what malloc got back in its free lists. A burst (the first answers of 1,000 watches,
a certificate round over 5,000 servers, a large cycle) therefore leaves memory resident that
the steady state never touches again: ~18 MB at 1,000 services x 5 instances.
``malloc_trim(0)`` hands the free pages back. Elsewhere than glibc (musl, macOS) it is a
no-op: ``trim`` then returns False.

``freeze_startup`` takes what start-up built (the imported modules, their functions, classes
and code objects: ~50,000 objects before any catalog state) out of the cyclic garbage
collector's sight. They live as long as the process, yet every full collection walked them:
15-40 ms with the loop's GIL held, measured in the daemon under a 50/s change stream, i.e. a
stall of a runtime change in the middle of a rolling update. Frozen objects are still freed by
reference counting; only a reference cycle among them would outlive its use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    fn = getattr(libc, "malloc_trim", None)
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


def freeze_startup() -> int:
    """Collect once, then freeze every object alive (``gc.freeze``); returns how many are
    frozen. Called once, after start-up and before the first catalog answer is applied."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()

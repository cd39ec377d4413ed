"""host.memory: the heap trim is callable on this C library and harmless to repeat; the
start-up freeze hides what start-up built from full collections."""

from __future__ import annotations

import ctypes.util
import gc

from sidecar.host import memory


def test_trim_reports_whether_the_c_library_can() -> None:
    glibc = bool(ctypes.util.find_library("c"))
    assert memory.trim() is glibc
    assert memory.trim() is glibc  # a second call finds nothing to free and still works


def test_freeze_startup_takes_the_start_up_objects_out_of_full_collections() -> None:
    try:
        frozen = memory.freeze_startup()
        assert frozen == gc.get_freeze_count() > 10_000  # this process: pytest and its imports
        assert gc.get_count()[2] == 0 and len(gc.get_objects(generation=2)) < frozen / 10
        later = [[n] for n in range(100)]  # built after the freeze: collected as before
        assert memory.freeze_startup() >= frozen  # a second call only adds
        del later
    finally:
        gc.unfreeze()  # the rest of this worker's tests run as before

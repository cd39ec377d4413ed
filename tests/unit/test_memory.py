"""host.memory: the heap trim is callable on this C library and harmless to repeat."""

from __future__ import annotations

import ctypes.util

from sidecar.host import memory


def test_trim_reports_whether_the_c_library_can() -> None:
    glibc = bool(ctypes.util.find_library("c"))
    assert memory.trim() is glibc
    assert memory.trim() is glibc  # a second call finds nothing to free and still works

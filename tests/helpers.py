"""Small helpers shared by the tests (importable as ``helpers`` thanks to tests/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from devkit.ports import free_port
from sidecar.host.files import is_temp

T = TypeVar("T")
__all__ = ["REPO_ROOT", "at_rest", "free_port", "wait_until"]


def wait_until(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T = predicate()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)
        last = predicate()
    return last


REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout (tests only: the package
# itself never looks at its source tree)


def at_rest(directory: Path) -> list[Path]:
    """The files of ``directory`` but an atomic write's temporary one in flight: the daemon
    writes its heartbeat every round, and ``.<name>.<random>.tmp`` exists for a moment (a
    listing may hold it, a ``stat`` a moment later may not find it)."""
    return sorted(p for p in directory.iterdir() if not is_temp(p))

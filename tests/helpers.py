"""Small helpers shared by the tests (importable as ``helpers`` thanks to tests/conftest.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sidecar.host.files import is_temp

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on ``host`` (bind port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


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

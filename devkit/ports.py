"""Free TCP ports for the dev kit, the tests and their child processes (dev tooling, not in
the wheel).

Why not "bind port 0, read it, release it": that port comes from Linux's ephemeral range
(``net.ipv4.ip_local_port_range``, 32768-60999 by default), the one the kernel also hands out
as the source port of every outgoing connection on the machine. Between the release and the
listen of whoever asked for it, a Consul agent dialling its own RPC port or a client
connecting anywhere can take it, and the listen fails with EADDRINUSE (seen in CI: a gateway's
public port refused at start, and the test waited 20 s for a retry due in 30). Ports here come
from 11000-18999: below that range, below the gateway's hashed ports for undeclared services
(20000-29999), and clear of the fixed ports the tests register as fake backends (19000-19999,
30000-32000), one slice per pytest-xdist worker so that two workers never pick the same one,
handed out in turn from a random start (a test asks for several ports before it binds any of
them: two calls never return the same port until the slice wraps), each checked free by a
bind.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

LOW, HIGH = 11000, 19000  # see the module: no test, no gateway default uses these
RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_next: list[int] = []  # the next port to try in this process's slice


def _ephemeral_low() -> int:
    try:
        return int(RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _slice() -> tuple[int, int]:
    """This process's ports: [low, high), below the ephemeral range, one slice per worker."""
    high = min(HIGH, _ephemeral_low())
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker) if worker.isdigit() else 0
    size = (high - LOW) // max(count, 1)
    return LOW + index * size, LOW + (index + 1) * size


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now, outside the ephemeral range, and not handed out
    before by this process (see the module)."""
    low, high = _slice()
    size = high - low
    if size >= 16:
        if not _next or not low <= _next[0] < high:
            _next[:] = [random.randrange(low, high)]
        for _ in range(size):  # bounded: once round the slice
            port = _next[0]
            _next[0] = low + (port + 1 - low) % size
            if _bindable(host, port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # no room: the old way
        sock.bind((host, 0))
        found: int = sock.getsockname()[1]
        return found

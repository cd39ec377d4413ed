"""Public ports seen from outside HAProxy: which ones nothing listens on, which ones a new
frontend could not bind, and which ones HAProxy's own log says it failed to bind (adapter).

Used by the applier (after a reload: did every frontend bind?), by ``sidecar check``, and by
the daemon's preflight before a reload that adds ports.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from collections.abc import Iterable

_BIND_ALERT = re.compile(
    r"frontend fe_(\d+): cannot bind socket \(([^)]*)\)(?: for)? \[[^\]]*\]", re.ASCII
)


def parse_bind_failures(text: str) -> dict[int, str]:
    """HAProxy's bind alerts in ``text`` (pure): frontend port -> the OS's reason."""
    return {int(port): reason[:80] for port, reason in _BIND_ALERT.findall(text)}


def unbound_ports(address: str, ports: Iterable[int], timeout: float = 1.0) -> list[int]:
    """Ports on which nothing accepts a TCP connection (frontends that failed to bind).

    A frontend whose backend has no usable server accepts and resets at once, and the reset
    may even beat connect(): only a refused connection or a timeout means "not listening".
    """
    host = "127.0.0.1" if address in ("0.0.0.0", "") else ("::1" if address == "::" else address)
    missing: list[int] = []
    for port in ports:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            continue
        except OSError:
            missing.append(port)
    return missing


def unbindable_ports(address: str, ports: Iterable[int]) -> dict[int, str]:
    """Ports a new frontend could not bind, as far as this process can know (preflight).

    Only for ports HAProxy does not hold yet: HAProxy binds with SO_REUSEPORT, so a port it
    holds itself would look busy too. EACCES is not believed here: the daemon may have dropped
    a capability (CAP_NET_BIND_SERVICE) that HAProxy still gets; HAProxy's own alert after a
    failed reload tells (``HAProxy.bind_failures``).
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    found: dict[int, str] = {}
    for port in ports:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EPERM):
                    name = errno.errorcode.get(exc.errno or 0, "?")
                    found[port] = f"{os.strerror(exc.errno or 0)} ({name})"
    return found

"""HAProxy's UNIX-socket CLIs: the runtime API (admin socket) and the master CLI (adapter).

One command line per connection, answer read until the server closes. Errors of the socket
layer become ``HAProxyError`` here.
"""

from __future__ import annotations

import socket
from pathlib import Path

from sidecar.base.errors import HAProxyError

BUFFER = 256 * 1024  # bytes: a first read's room (more than glibc's 128 KiB mmap threshold)


def send_command(path: Path, command: str, timeout: float = 5.0) -> str:
    """Send one command line (several commands may be joined with ';') and return the answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        sock.sendall(command.encode("ascii") + b"\n")
        sock.shutdown(socket.SHUT_WR)  # end of input: the CLI answers and closes
        # One buffer that doubles, not a list of 64 KB chunks: at 1,000 x 5 ``show servers
        # state`` is ~1 MB every drift check, and chunks that size came from glibc's heap
        # and left their free space there; a block this big is a mapping of its own
        # (``host.memory``), handed back whole when freed.
        buffer, size = bytearray(BUFFER), 0
        while n := sock.recv_into(memoryview(buffer)[size:]):
            size += n
            if size == len(buffer):
                buffer += bytes(len(buffer))
    except OSError as exc:
        raise HAProxyError(f"{path}: {command.split(' ', 1)[0]}: {exc}") from None
    finally:
        sock.close()
    del buffer[size:]
    return buffer.decode("utf-8", "replace")


def answers(path: Path, timeout: float = 1.0) -> bool:
    """Whether something answers on the socket."""
    try:
        send_command(path, "help", timeout)
    except HAProxyError:
        return False
    return True

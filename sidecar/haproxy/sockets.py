"""HAProxy's UNIX-socket CLIs: the runtime API (admin socket) and the master CLI (adapter).

One command line per connection, answer read until the server closes. Errors of the socket
layer become ``HAProxyError`` here.
"""

from __future__ import annotations

import socket
from pathlib import Path

from sidecar.base.errors import HAProxyError


def send_command(path: Path, command: str, timeout: float = 5.0) -> str:
    """Send one command line (several commands may be joined with ';') and return the answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        sock.sendall(command.encode("ascii") + b"\n")
        sock.shutdown(socket.SHUT_WR)  # end of input: the CLI answers and closes
        chunks: list[bytes] = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError as exc:
        raise HAProxyError(f"{path}: {command.split(' ', 1)[0]}: {exc}") from None
    finally:
        sock.close()
    return b"".join(chunks).decode("utf-8", "replace")


def answers(path: Path, timeout: float = 1.0) -> bool:
    """Whether something answers on the socket."""
    try:
        send_command(path, "help", timeout)
    except HAProxyError:
        return False
    return True

"""A socket reader with a deadline for the whole request, not just for each read (adapter).

Used by the ``/metrics`` ``/healthz`` ``/readyz`` server (``sidecar.health.endpoint``), at the end
of the flow. ``BaseHTTPRequestHandler.timeout`` bounds each ``recv``: a client that connects and
sends nothing is dropped after it. A slow-loris client that trickles one byte of headers every
few seconds resets that timer on every byte and would hold a thread for as long as it likes
(up to 100 header lines of 64 KiB each). :class:`DeadlineReader` adds the missing bound: every
``recv`` waits at most ``min(idle, time left)``, and once the deadline has passed the next read
raises ``TimeoutError``, which ``BaseHTTPRequestHandler.handle_one_request`` already turns into
"drop this connection".
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class DeadlineReader(io.RawIOBase):
    """Reads ``sock`` until ``deadline`` (a ``clock()`` value), ``idle`` seconds per ``recv``.

    Wrap it in ``io.BufferedReader`` for ``readline``. The socket's timeout is set back to
    ``idle`` after every read, so writes (the response) keep the handler's usual timeout.
    """

    def __init__(
        self,
        sock: socket.socket,
        deadline: float,
        idle: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._sock = sock
        self.deadline = deadline
        self._idle = idle
        self._clock = clock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        left = self.deadline - self._clock()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(min(self._idle, left))
        try:
            return self._sock.recv_into(memoryview(buffer))
        finally:
            self._sock.settimeout(self._idle)


def deadline_rfile(sock: socket.socket, seconds: float) -> io.BufferedReader:
    """A buffered reader of ``sock`` that gives up ``seconds`` from now."""
    return io.BufferedReader(DeadlineReader(sock, time.monotonic() + seconds, seconds))

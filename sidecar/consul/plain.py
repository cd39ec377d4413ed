"""Plain synchronous HTTP/1.1 to Consul on the standard library's ``http.client``: the
transport of ``consul.client.ConsulClient`` (the command line, the fleet lock and registry,
``sidecar register``, the second read of held removals). The watches have their own
(``consul.conn``).

Why not httpx (the transport until 2026-12-03): these are a few requests a minute, and httpx
with httpcore, idna and their modules cost the daemon 1.45 MB of its 60 MB budget at 1,000
services (RSS of the daemon's imports with and without it, from the wheel), while
``http.client`` is loaded anyway (prometheus_client's exposition imports it) and does the
protocol: framing, chunked bodies, keep-alive. What is left here: a few kept-alive
connections shared by threads (each request owns one while it runs), an idle connection that
the server closed replaced before it is used, a size bound, and failures named by the step
that failed (``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``: the words the logs and
docs/reliability.md have always used).
"""

from __future__ import annotations

import http.client
import select
import ssl
import threading
from collections.abc import Mapping

MAX_BODY = 64 * 1024 * 1024  # a Consul answer larger than this is refused, not buffered
KEEP = 4  # idle connections kept: the daemon's threads rarely ask at the same time
Result = tuple[int, dict[str, str], bytes]  # status, headers (names in lower case), body


class PlainError(Exception):
    """A request that got no answer; ``str`` is ``"<Step>: <cause>"``."""

    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"{step}: {cause}")
        self.step = step


class PlainHTTP:
    """``request`` -> (status, headers, body), or ``PlainError``; safe to share by threads."""

    def __init__(
        self, host: str, port: int, tls: ssl.SSLContext | None, headers: Mapping[str, str]
    ) -> None:
        self._host, self._port, self._tls = host, port, tls
        self._headers = dict(headers)
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def request(self, method: str, target: str, body: bytes, timeout: float) -> Result:
        conn = self._take()
        try:
            return self._exchange(conn, method, target, body, timeout)
        except BaseException:
            conn.close()  # failed midway (or interrupted): never reused
            raise

    def _exchange(
        self, conn: http.client.HTTPConnection, method: str, target: str, body: bytes,
        timeout: float,
    ) -> Result:  # fmt: skip
        reused = conn.sock is not None
        if reused:
            conn.sock.settimeout(timeout)
        else:
            _connect(conn, timeout)
        try:
            return self._ask(conn, method, target, body)
        except ConnectionError as exc:  # RemoteDisconnected, a reset, a broken pipe
            if not (reused and method == "GET"):
                raise PlainError(type(exc).__name__, exc) from None
        # The server closed the kept connection as we sent: a GET is safe to send once more,
        # on a fresh connection (a PUT is the caller's to retry: it may have landed).
        conn.close()
        _connect(conn, timeout)
        try:
            return self._ask(conn, method, target, body)
        except ConnectionError as exc:
            raise PlainError(type(exc).__name__, exc) from None

    def _ask(
        self, conn: http.client.HTTPConnection, method: str, target: str, body: bytes
    ) -> Result:
        try:
            conn.request(method, target, body=body or None, headers=self._headers)
            response = conn.getresponse()
            content = response.read(MAX_BODY + 1)
        except TimeoutError as exc:
            raise PlainError("ReadTimeout", exc) from None
        except ConnectionError:
            raise  # the caller's: a kept connection closed by the server is retried once
        except (OSError, http.client.HTTPException) as exc:
            raise PlainError(type(exc).__name__, exc) from None
        if len(content) > MAX_BODY:
            conn.close()
            raise PlainError("TooLarge", ValueError(f"answer larger than {MAX_BODY} bytes"))
        headers = {name.lower(): value for name, value in response.getheaders()}
        if response.will_close or not response.isclosed():
            conn.close()  # the server asked to close, or the body was not read to its end
        else:
            self._give(conn)
        return response.status, headers, content

    def _take(self) -> http.client.HTTPConnection:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not _closed_by_peer(conn):
                    return conn
                conn.close()
        if self._tls is not None:
            return http.client.HTTPSConnection(self._host, self._port, context=self._tls)
        return http.client.HTTPConnection(self._host, self._port)

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < KEEP:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _connect(conn: http.client.HTTPConnection, timeout: float) -> None:
    conn.timeout = timeout
    try:
        conn.connect()
    except TimeoutError as exc:
        conn.close()
        raise PlainError("ConnectTimeout", exc) from None
    except OSError as exc:  # refused, unreachable, TLS (ssl.SSLError is an OSError)
        conn.close()
        raise PlainError("ConnectError", exc) from None


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """An idle connection with something to read was closed (or spoken on) by the server.
    ``poll``, not ``select``: a gateway at 1,000 services holds descriptors above 1,024."""
    sock = conn.sock
    if sock is None:
        return True
    poller = select.poll()
    try:
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True

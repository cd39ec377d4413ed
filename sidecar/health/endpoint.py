"""The loopback ``/metrics`` ``/healthz`` ``/readyz`` server (adapter: a thread, sockets).

Serves what ``health.metrics.Metrics`` holds and judges liveness and readiness
(``health.check``) from the last status record the daemon gave it. It trusts no client: a
connection must deliver its request within ``status.idle_timeout`` seconds (each read, and the
request as a whole: see ``host.deadline_io``) or it is closed, and a failed connection is
logged at DEBUG rather than printed, so neither an idle nor a trickling client holds a thread
or floods stderr.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from sidecar.base.validate import parse_listen
from sidecar.config.ops import CheckSettings, StatusSettings
from sidecar.health.check import liveness, readiness
from sidecar.health.metrics import Metrics
from sidecar.host.deadline_io import deadline_rfile

log = logging.getLogger(__name__)


def _handler(
    metrics: Metrics, thresholds: CheckSettings, clock: Callable[[], float], idle_timeout: float
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "dirac-sidecar"
        # The socket timeout of every read and write: a client that connects and sends
        # nothing is dropped after it instead of holding its thread for ever. HTTP/1.0 (the
        # default protocol_version): one request per connection, so no keep-alive to idle in.
        timeout = idle_timeout

        def setup(self) -> None:
            super().setup()
            self.rfile.close()  # else its reference keeps the socket open after close()
            # ... and the whole request (line and headers; BaseHTTPRequestHandler caps them at
            # 64 KiB a line and 100 headers) must arrive within the same time, so a client
            # trickling a byte at a time cannot keep resetting the per-read timeout.
            self.rfile = deadline_rfile(self.connection, idle_timeout)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                judge = liveness if path == "/healthz" else readiness
                ok, reason = judge(metrics.status, clock(), thresholds)
                self._send(200 if ok else 503, (reason + "\n").encode(), "text/plain")
            else:
                self._send(404, b"not found: try /metrics /healthz /readyz\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    return Handler


class StatusServer:
    """``ThreadingHTTPServer`` in a daemon thread on ``StatusSettings.listen``."""

    def __init__(
        self,
        metrics: Metrics,
        settings: StatusSettings,
        thresholds: CheckSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.address = parse_listen(settings.listen)
        self._handler = _handler(
            metrics, thresholds or CheckSettings(), clock, settings.idle_timeout
        )
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None  # stop -> serving thread

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._httpd.server_address[1]) if self._httpd else self.address[1]

    def start(self) -> None:
        """Bind and serve; raises OSError when the address cannot be bound."""
        host, port = self.address
        server_class = _v6_server if ":" in host else _Server
        self._httpd = server_class((host, port), self._handler)
        self._httpd.daemon_threads = True
        self._httpd.timeout = 1.0  # bounds ``handle_request``'s own wait, should readiness vanish
        self._wake = wake = socket.socketpair()
        self._thread = threading.Thread(
            target=_serve, args=(self._httpd, wake[1]), name="status-http", daemon=True
        )
        self._thread.start()
        log.info("metrics and health on http://%s:%d/metrics", host, self.port)

    def stop(self, timeout: float = 5.0) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        wake, self._wake = self._wake, None
        if wake is not None:
            wake[0].send(b"x")
        if self._thread is not None:
            self._thread.join(timeout)
        httpd.server_close()
        for end in wake or ():
            end.close()


def _serve(httpd: ThreadingHTTPServer, wake: socket.socket) -> None:
    """Accept until ``wake`` is readable. Not ``serve_forever``, which wakes every
    ``poll_interval`` to look for a shutdown (at 0.5 s, 0.02 % of a core: a tenth of an idle
    gateway's CPU): this thread sleeps until a client or the stop comes."""
    with selectors.PollSelector() as selector:  # poll: descriptors above 1,024
        selector.register(httpd, selectors.EVENT_READ)
        selector.register(wake, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj is wake:
                    return
            httpd.handle_request()  # readable: accepts at once, the handler in its thread


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints the traceback of a reset or broken connection to stderr, past
        # the log's formatting and repeat limit: a client can cause as many as it likes.
        log.debug("status endpoint: connection from %s failed", client_address, exc_info=True)


class _V6Server(_Server):
    address_family = socket.AF_INET6


def _v6_server(
    address: tuple[str, int], handler: type[BaseHTTPRequestHandler]
) -> ThreadingHTTPServer:
    return _V6Server(address, handler)

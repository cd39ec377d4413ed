"""A sample DIRAC-like TLS service for the demo and the integration tests.

Like a DISET server it requires a client certificate and accepts RFC 3820 proxies. For every
connection it answers one JSON line describing what it saw of the caller, then closes::

    {"service", "instance", "peer", "peer_chain": [{"subject", "issuer"}...], "peer_subject",
     "is_proxy", "identity", "group"}

Command line: ``python -m devkit.backend --listen 127.0.0.1:PORT --cert C --key K
--ca-dir D [--name System/Service] [--instance ID]``; prints ``READY <port>`` once listening.
In-process: :func:`start_backend`. As a child process: :class:`BackendProcess`.

The peer chain comes from ``_ssl._SSLSocket.get_verified_chain()``: public as
``SSLSocket.get_verified_chain()`` only from Python 3.13, but present privately since 3.10.
"""

from __future__ import annotations

import _ssl
import argparse
import contextlib
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

from cryptography import x509

from devkit.x509tools import dirac_dn, dirac_group, is_proxy
from sidecar.base.validate import parse_listen

DEFAULT_NAME = "Framework/Sample"


def server_context(
    cert: Path | str,
    key: Path | str,
    ca_file: Path | str | None = None,
    ca_dir: Path | str | None = None,
) -> ssl.SSLContext:
    """A TLS server context that requires a client certificate and accepts proxies."""
    if ca_file is None and ca_dir is None:
        raise ValueError("need ca_file or ca_dir to verify clients")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    ctx.load_verify_locations(
        cafile=None if ca_file is None else str(ca_file),
        capath=None if ca_dir is None else str(ca_dir),
    )
    ctx.verify_mode = ssl.CERT_REQUIRED
    flags = ctx.verify_flags | ssl.VERIFY_ALLOW_PROXY_CERTS
    ctx.verify_flags = flags & ~ssl.VERIFY_X509_STRICT  # 3.13 defaults; proxies are not strict
    return ctx


def peer_chain(sock: ssl.SSLSocket) -> list[x509.Certificate]:
    """The verified peer chain, leaf first."""
    getter = getattr(sock, "get_verified_chain", None)  # Python >= 3.13
    if getter is None:
        getter = getattr(sock, "_sslobj").get_verified_chain  # noqa: B009  # 3.10-3.12
    certs: list[x509.Certificate] = []
    for item in getter() or []:
        der = item if isinstance(item, bytes) else item.public_bytes(_ssl.ENCODING_DER)
        certs.append(x509.load_der_x509_certificate(der))
    return certs


def describe_peer(chain: Sequence[x509.Certificate]) -> dict[str, Any]:
    """What a DIRAC service derives from the peer chain: DN, identity, isProxy, group."""
    if not chain:
        return {"peer_chain": [], "peer_subject": None, "is_proxy": False, "identity": None}
    leaf = chain[0]
    proxy = is_proxy(leaf)
    identity = next((c for c in chain if not is_proxy(c)), leaf)
    group = next((g for c in chain if (g := dirac_group(c)) is not None), None)
    return {
        "peer_chain": [
            {"subject": dirac_dn(c.subject), "issuer": dirac_dn(c.issuer)} for c in chain
        ],
        "peer_subject": dirac_dn(leaf.subject),
        "is_proxy": proxy,
        "identity": dirac_dn(identity.subject),
        "group": group,
    }


class BackendServer:
    """A threaded TLS server answering one JSON line per connection."""

    def __init__(
        self,
        context: ssl.SSLContext,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = DEFAULT_NAME,
        instance: str | None = None,
        max_workers: int = 64,
        io_timeout: float = 10.0,
    ) -> None:
        self.context = context
        self.name = name
        self._listener = socket.create_server((host, port), backlog=128)
        self._listener.settimeout(0.2)
        self.host, self.port = self._listener.getsockname()[:2]
        self.instance = instance or f"{self.host}:{self.port}"
        self.io_timeout = io_timeout
        self.accepted = 0
        self.served = 0
        self.failed = 0
        self._slots = threading.BoundedSemaphore(max_workers)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: set[threading.Thread] = set()
        self._thread: threading.Thread | None = None
        # Long calls (``hold_next``): their answers wait, after the handshake, until the gate
        # opens or ``hold_timeout`` passes, so a test decides when a call in flight ends.
        self.gate = threading.Event()
        self.hold_timeout = 120.0
        self._holds = 0

    def hold_next(self, calls: int = 1) -> threading.Event:
        """The next ``calls`` calls wait for the returned gate before they are answered."""
        with self._lock:
            self.gate, self._holds = threading.Event(), calls
        return self.gate

    def start(self) -> Self:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.serve, name=f"backend-{self.port}", daemon=True)
        self._thread.start()
        return self

    def serve(self) -> None:
        """Accept until :meth:`stop`; one bounded worker thread per connection."""
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.2):
                continue
            try:
                conn, addr = self._listener.accept()
            except (TimeoutError, OSError):
                self._slots.release()
                continue
            # The answer follows the handshake's last flight: without this, Nagle waits for
            # a delayed ACK and every call costs ~40 ms.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.accepted += 1
            worker = threading.Thread(target=self._handle, args=(conn, addr), daemon=True)
            with self._lock:
                self._workers.add(worker)
            worker.start()

    def _handle(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        try:
            conn.settimeout(self.io_timeout)
            with self.context.wrap_socket(conn, server_side=True) as tls:
                payload = {"service": self.name, "instance": self.instance}
                payload["peer"] = f"{addr[0]}:{addr[1]}"
                payload.update(describe_peer(peer_chain(tls)))
                with self._lock:
                    held, self._holds = self._holds > 0, max(0, self._holds - 1)
                if held:
                    self.gate.wait(self.hold_timeout)
                tls.sendall(json.dumps(payload).encode() + b"\n")
                self._close_notify(tls)
            with self._lock:
                self.served += 1
        except (OSError, ValueError) as exc:
            with self._lock:
                self.failed += 1
            print(f"backend {self.instance}: {addr[0]}:{addr[1]}: {exc}", file=sys.stderr)
        finally:
            conn.close()
            self._slots.release()
            with self._lock:
                self._workers.discard(threading.current_thread())

    @staticmethod
    def _close_notify(tls: ssl.SSLSocket) -> None:
        tls.settimeout(1.0)
        with contextlib.suppress(OSError, ValueError):  # the client went away first: fine
            tls.unwrap()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close the listener, wait (bounded) for workers."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._listener.close()
        deadline = time.monotonic() + timeout
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_backend(
    cert: Path | str,
    key: Path | str,
    ca_file: Path | str | None = None,
    ca_dir: Path | str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    name: str = DEFAULT_NAME,
    instance: str | None = None,
) -> BackendServer:
    """Start an in-process backend (port 0: a free one; see ``.port``). Stop with ``.stop()``."""
    ctx = server_context(cert, key, ca_file=ca_file, ca_dir=ca_dir)
    return BackendServer(ctx, host=host, port=port, name=name, instance=instance).start()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sample backend until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description="Sample DIRAC-like TLS backend.")
    parser.add_argument("--listen", required=True, help="HOST:PORT (port 0: pick a free one)")
    parser.add_argument("--cert", required=True, type=Path)
    parser.add_argument("--key", required=True, type=Path)
    parser.add_argument("--ca-dir", type=Path, help="hashed CA directory")
    parser.add_argument("--ca-file", type=Path, help="CA bundle")
    parser.add_argument("--name", default=DEFAULT_NAME, help="System/Service")
    parser.add_argument("--instance", default=None)
    args = parser.parse_args(argv)
    if args.ca_dir is None and args.ca_file is None:
        parser.error("need --ca-dir or --ca-file")
    host, port = parse_listen(args.listen)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server = start_backend(
        args.cert, args.key, args.ca_file, args.ca_dir, host, port, args.name, args.instance
    )
    print(f"READY {server.port}", flush=True)
    print(f"backend {args.name} pid {os.getpid()} on {host}:{server.port}", file=sys.stderr)
    while not stop.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

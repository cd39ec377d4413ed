"""The sample DIRAC-like TLS backend of ``devkit.backend`` without its 40 ms artefact.

``devkit.backend`` writes its TLS 1.3 session tickets and then its one-line answer as two
small writes on a socket without TCP_NODELAY: Nagle holds the answer until the peer's delayed
ACK (~40 ms on Linux), so every call through it takes ~45 ms even though the handshake is done
in ~3 ms. Through the gateway the peer is HAProxy, so the client cannot ACK faster. For the
benchmarks this variant sends no session tickets and sets TCP_NODELAY; everything else (client
certificate required, proxies accepted, the JSON answer) is the same code, but for one
addition: a ClientHello whose server name is another instance's ``probe_name`` (below) is
refused at once with an alert (a measuring poll's attempt on an old server; see there).

    python bench/tls_backend.py --listen 127.0.0.1:0 --cert C --key K --ca-dir D --instance ID
prints ``READY <port>`` once listening; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import socket
import ssl
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devkit.backend import BackendServer, server_context

PROBE_SUFFIX = ".probe.invalid"  # see probe_name


def probe_name(instance: str) -> str:
    """The TLS server name (SNI) of a measuring attempt that wants backend ``instance``.

    This backend refuses such a ClientHello at once, with an alert, when the name
    is not its own: a measuring poll's attempt that HAProxy sends to another (old) server
    then fails within a round trip instead of a whole handshake, as an attempt on a port with
    no server does. Without it, the attempt in flight when the new server becomes routable
    is a full handshake that must end before the next attempt starts: up to a handshake of
    the poller's own (up to 8-20 ms under the 50/s stream) in every new-instance figure. The
    wanted instance completes the full handshake, client certificate and all."""
    label = "".join(c if c.isalnum() else "-" for c in instance.lower())
    return f"{label}{PROBE_SUFFIX}"


class FastBackend(BackendServer):
    def _handle(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        super()._handle(conn, addr)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca-dir", required=True)
    parser.add_argument("--name", default="Bench/Any")
    parser.add_argument("--instance", required=True)
    parser.add_argument("--workers", type=int, default=128)
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    ctx = server_context(args.cert, args.key, ca_dir=args.ca_dir)
    ctx.num_tickets = 0
    own = probe_name(args.instance)

    def miss(
        _sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _ctx: ssl.SSLContext
    ) -> int | None:
        if name is not None and name.endswith(PROBE_SUFFIX) and name != own:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        return None

    ctx.sni_callback = miss
    server = FastBackend(
        ctx,
        host=host,
        port=int(port),
        name=args.name,
        instance=args.instance,
        max_workers=args.workers,
    )
    server._listener.listen(1024)  # a deeper accept queue than the sample's 128
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"READY {server.port}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

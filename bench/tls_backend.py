"""The sample DIRAC-like TLS backend of ``devkit.backend`` without its 40 ms artefact.

``devkit.backend`` writes its TLS 1.3 session tickets and then its one-line answer as two
small writes on a socket without TCP_NODELAY: Nagle holds the answer until the peer's delayed
ACK (~40 ms on Linux), so every call through it takes ~45 ms even though the handshake is done
in ~3 ms. Through the gateway the peer is HAProxy, so the client cannot ACK faster. For the
benchmarks this variant sends no session tickets and sets TCP_NODELAY; everything else (client
certificate required, proxies accepted, the JSON answer) is the same code.

    python bench/tls_backend.py --listen 127.0.0.1:0 --cert C --key K --ca-dir D --instance ID
prints ``READY <port>`` once listening; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devkit.backend import BackendServer, server_context


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

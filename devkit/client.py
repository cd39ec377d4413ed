"""A TLS client that calls the sample backend the way a DIRAC client calls a service.

It presents the RFC 3820 proxy chain as client certificate, verifies the server certificate
against the CA and checks the hostname (SNI and expected host = the host of the URL, as DIRAC's
``dips`` client does; no way to turn it off), reads the backend's JSON line and returns it.

Failures are told apart: :class:`TLSVerificationError` (server certificate: CA, expiry,
hostname), :class:`TLSError` (other TLS failures, e.g. our certificate was rejected),
:class:`ConnectionFailedError` (refused, reset, closed before an answer; ``.reason``) and
:class:`CallTimeoutError`.

Command line: ``python -m devkit.client HOST:PORT --proxy FILE --ca CA --servername NAME``
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devkit.x509tools import ProxyPaths

ProxySpec = ProxyPaths | Path | str | tuple[Path | str, Path | str]
MAX_ANSWER = 1 << 20


class CallError(Exception):
    """A call to a sample backend failed."""


class TLSVerificationError(CallError):
    """The server certificate did not verify (unknown CA, expired, hostname not in SAN)."""

    def __init__(self, message: str, verify_code: int | None = None) -> None:
        super().__init__(message)
        self.verify_code = verify_code


class TLSError(CallError):
    """Any other TLS failure (e.g. the server rejected our client certificate)."""


class ConnectionFailedError(CallError):
    """No answer at the TCP level: ``reason`` is refused, reset, closed, timeout or error."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class CallTimeoutError(ConnectionFailedError):
    """The connection, handshake or answer took longer than the timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "timeout")


def client_context(proxy: ProxySpec, ca: Path | str) -> ssl.SSLContext:
    """Client context: proxy chain as certificate, CA file or hashed dir, hostname check on.

    ``proxy``: :class:`ProxyPaths`, a single Globus/DIRAC proxy file (cert, key, chain) or a
    ``(chain_file, key_file)`` pair.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ca_path = Path(ca)
    if ca_path.is_dir():
        ctx.load_verify_locations(capath=str(ca_path))
    else:
        ctx.load_verify_locations(cafile=str(ca_path))
    if isinstance(proxy, ProxyPaths):
        ctx.load_cert_chain(certfile=str(proxy.chain), keyfile=str(proxy.key))
    elif isinstance(proxy, tuple):
        ctx.load_cert_chain(certfile=str(proxy[0]), keyfile=str(proxy[1]))
    else:
        ctx.load_cert_chain(certfile=str(proxy))
    return ctx


def _translate(exc: OSError, where: str) -> CallError:
    """Map socket/TLS exceptions onto the :class:`CallError` family."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TLSVerificationError(f"{where}: {exc.verify_message or exc}", exc.verify_code)
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return ConnectionFailedError(f"{where}: closed during TLS: {exc}", "closed")
    if isinstance(exc, ssl.SSLError):
        return TLSError(f"{where}: {exc}")
    if isinstance(exc, TimeoutError):
        return CallTimeoutError(f"{where}: timed out")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectionFailedError(f"{where}: connection refused", "refused")
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return ConnectionFailedError(f"{where}: connection reset: {exc}", "reset")
    return ConnectionFailedError(f"{where}: {exc}", "error")


def _read_line(tls: ssl.SSLSocket) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < MAX_ANSWER:
        chunk = tls.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def call(
    host: str,
    port: int,
    proxy: ProxySpec,
    ca: Path | str,
    server_hostname: str | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Connect to ``host:port`` over TLS as a DIRAC client would and return the JSON answer.

    ``server_hostname`` is the host of the URL (the gateway name): it is sent as SNI and must be
    in the server certificate's SAN. Defaults to ``host``.
    """
    expected = server_hostname or host
    where = f"{host}:{port} (as {expected})"
    ctx = client_context(proxy, ca)
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=expected) as tls,
        ):
            data = _read_line(tls)
    except OSError as exc:
        raise _translate(exc, where) from exc
    if not data:
        raise ConnectionFailedError(f"{where}: closed without an answer", "closed")
    try:
        answer = json.loads(data.split(b"\n", 1)[0])
    except ValueError as exc:
        raise CallError(f"{where}: not a JSON answer: {data[:200]!r}") from exc
    if not isinstance(answer, dict):
        raise CallError(f"{where}: not a JSON object: {data[:200]!r}")
    return answer


def main(argv: Sequence[str] | None = None) -> int:
    """CLI. Exit 0 ok, 2 TLS verification failed, 3 other TLS error, 4 connection failed."""
    parser = argparse.ArgumentParser(description="Call a sample backend like a DIRAC client.")
    parser.add_argument("address", help="HOST:PORT")
    parser.add_argument("--proxy", required=True, type=Path, help="proxy file or chain file")
    parser.add_argument("--proxy-key", type=Path, help="key, when --proxy is a chain file")
    parser.add_argument("--ca", required=True, type=Path, help="CA file or hashed CA directory")
    parser.add_argument("--servername", help="URL host: SNI and hostname check (default HOST)")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    host, _, port = args.address.rpartition(":")
    proxy: ProxySpec = (args.proxy, args.proxy_key) if args.proxy_key else args.proxy
    try:
        answer = call(host.strip("[]"), int(port), proxy, args.ca, args.servername, args.timeout)
    except CallError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if isinstance(exc, TLSVerificationError):
            return 2
        return 3 if isinstance(exc, TLSError) else 4
    print(json.dumps(answer, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

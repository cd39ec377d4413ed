"""The health probe of ``sidecar register``: a TLS handshake or a DISET ``ping`` (adapter).

Called by ``register.agent`` every check interval for each registered service: it connects to
the service's real port with the host certificate as client certificate, verifies the chain
against the CA directory (no hostname check: it dials a local address), and for ``dips``
services sends DISET's ``ping`` RPC, reading the answer frame with a size limit.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sidecar.base.errors import ConfigError


def tls_context(creds: HostCredentials) -> ssl.SSLContext:
    """A client context: host certificate as client certificate, server chain verified against
    the CA directory; no hostname check (the check dials the local address)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_cert_chain(creds.cert, creds.key)
        ca = Path(creds.ca_dir)
        if ca.is_dir():
            ctx.load_verify_locations(capath=str(ca))
        else:
            ctx.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            creds.cert, "/DIRAC/Security", f"cannot load credentials: {exc}"
        ) from None
    return ctx


@dataclass(frozen=True, slots=True)
class HostCredentials:
    cert: str
    key: str
    ca_dir: str


def tls_handshake(
    ctx: ssl.SSLContext, host: str, port: int, timeout: float = 5.0
) -> tuple[bool, str]:
    """One handshake: ``(ok, note)``. A server that rejects our certificate after a TLS 1.3
    handshake is caught by a short read: an alert fails, silence (DISET waits for the client's
    proposal) or data passes."""
    where = f"{host}:{port}"
    start = time.monotonic()
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=None) as tls,
        ):
            took = (time.monotonic() - start) * 1000
            version, peer = tls.version(), tls.getpeercert() or {}
            tls.settimeout(0.3)
            try:
                if tls.recv(1) == b"":
                    return False, f"{where}: closed the connection after the TLS handshake"
            except TimeoutError:
                pass
    except ssl.SSLCertVerificationError as exc:
        return False, f"{where}: server certificate rejected: {exc.verify_message}"
    except ssl.SSLError as exc:
        return False, f"{where}: TLS error: {exc.reason or exc}"
    except OSError as exc:
        return False, f"{where}: {exc.strerror or type(exc).__name__}"
    subject = cast(tuple[tuple[tuple[str, str], ...], ...], peer.get("subject", ()))
    names = [value for rdn in subject for name, value in rdn if name == "commonName"]
    cn = names[-1] if names else "?"
    expires = peer.get("notAfter", "?")
    return True, f"{where}: TLS handshake OK ({version}, {took:.0f} ms, CN={cn}, until {expires})"


def _frame(obj: object) -> bytes:
    """One DISET message: ``<decimal length>:<JSON>`` (DIRAC 9's default encoding)."""
    data = json.dumps(obj).encode()
    return str(len(data)).encode() + b":" + data


def _read_frame(tls: ssl.SSLSocket, limit: int = 1 << 20) -> Any:
    buf = b""
    while b":" not in buf:
        chunk = tls.recv(4096)
        if not chunk or len(buf) > 20:
            raise ConnectionError("closed by the service" if not chunk else "not DISET")
        buf += chunk
    head, _, body = buf.partition(b":")
    if not head.isdigit() or int(head) > limit:
        raise ConnectionError(f"not a DISET answer: {buf[:40]!r}")
    while len(body) < int(head):
        chunk = tls.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the service")
        body += chunk
    return json.loads(body[: int(head)])


def diset_ping(
    ctx: ssl.SSLContext, host: str, port: int, path: str, timeout: float = 5.0
) -> tuple[bool, str]:
    """A DISET ``ping`` RPC of service ``path`` (``System/Service``), as LHCb's checks did:
    TLS handshake, proposal, arguments, answer. ``(ok, note)``; no DIRAC needed."""
    where = f"{host}:{port}"
    start = time.monotonic()
    proposal = {"OK": True, "Value": [[path, "None", ""], ["RPC", "ping"], "", "dirac-sidecar"]}
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=None) as tls,
        ):
            tls.sendall(_frame(proposal))
            answer = _read_frame(tls)
            if isinstance(answer, dict) and answer.get("OK"):
                tls.sendall(_frame({"OK": True, "Value": []}))
                answer = _read_frame(tls)
    except ssl.SSLCertVerificationError as exc:
        return False, f"{where}: server certificate rejected: {exc.verify_message}"
    except ssl.SSLError as exc:
        return False, f"{where}: TLS error: {exc.reason or exc}"
    except (OSError, ValueError) as exc:
        return False, f"{where}: {getattr(exc, 'strerror', None) or exc or type(exc).__name__}"
    took = (time.monotonic() - start) * 1000
    if not isinstance(answer, dict) or not answer.get("OK"):
        message = answer.get("Message") if isinstance(answer, dict) else answer
        return False, f"{where}: DISET ping of {path} failed: {str(message)[:300]}"
    raw_value = answer.get("Value")
    value: dict[str, Any] = raw_value if isinstance(raw_value, dict) else {}
    return True, (
        f"{where}: DISET ping of {path} OK ({took:.0f} ms, DIRAC {value.get('version', '?')}, "
        f"up {value.get('service uptime', '?')} s)"
    )

"""Certificate probe: read each backend server's certificate chain over TLS (adapter).

Runs in a child process of the daemon (``main``, started by ``health.certjob``) and in the
``sidecar certs`` command.

Sits after apply, beside the status: it connects (pyOpenSSL) to every server of the desired
state, reads the chain the server sends, verifies it against the CA directory/file
(``X509Store`` + ``X509StoreContext``) and hands the result to the pure ``sidecar.core.certs``.

DISET servers require a client certificate. The server's chain is readable without one: with
TLS 1.3 the client's handshake completes before the server rejects the (empty) client
certificate, and with TLS 1.2 the server's Certificate message arrives before the server's
alert, and OpenSSL keeps it. Configure ``certs.client_cert`` (the gateway host certificate)
anyway: otherwise every probe leaves a "peer did not return a certificate" line in the
service's log.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL, crypto

from sidecar.config.ops import CertSettings, CheckSettings
from sidecar.core.certs import (
    CertFinding,
    CertReport,
    cert_info_from_der,
    evaluate,
    expiry_verdict,
)
from sidecar.core.certs import unreachable as unreachable_finding
from sidecar.core.severity import Severity
from sidecar.health.certjob import (
    LINGER,
    MAX_PARALLEL,
    ProbeError,
    ProbeRequest,
    ProbeTarget,
    encode_report,
)
from sidecar.host.privileges import renounce_capabilities

log = logging.getLogger(__name__)
NO_CHECK_TIME = 0x200000  # X509_V_FLAG_NO_CHECK_TIME: expiry is judged by certs.evaluate


# --- TLS --------------------------------------------------------------------------------------


def _context(settings: CertSettings) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_verify(SSL.VERIFY_PEER, lambda *args: True)  # read everything; verify afterwards
    if settings.client_cert:
        try:
            ctx.use_certificate_chain_file(settings.client_cert)
            ctx.use_privatekey_file(settings.client_key or settings.client_cert)
        except (SSL.Error, OSError) as exc:
            raise ProbeError(f"client certificate {settings.client_cert}: {exc}") from None
    return ctx


def _handshake(conn: SSL.Connection, sock: socket.socket, deadline: float) -> str:
    """Drive the handshake on a non-blocking socket; returns the TLS error text, or ""."""
    while True:
        try:
            conn.do_handshake()
            return ""
        except SSL.WantReadError:
            wait_read = True
        except SSL.WantWriteError:
            wait_read = False
        except SSL.Error as exc:
            return str(exc) or type(exc).__name__
        left = deadline - time.monotonic()
        if left <= 0:
            raise ProbeError("TLS handshake timed out")
        # poll, not select: a gateway holding a thousand parked Consul queries has descriptors
        # above FD_SETSIZE (1024), which select() refuses
        poller = select.poll()
        poller.register(sock, select.POLLIN if wait_read else select.POLLOUT)
        poller.poll(left * 1000)


def fetch_chain(
    address: str, port: int, server_name: str, ctx: SSL.Context, timeout: float
) -> list[x509.Certificate]:
    """The chain the server sends (leaf first); raises ProbeError when there is none. The
    error does not repeat the address: the finding names it (``where``), and a fleet that
    fails alike then shares one text (5,000 of them at 1,000 x 5)."""
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        raise ProbeError(f"connect: {exc.strerror or exc}") from None
    try:
        sock.setblocking(False)
        conn = SSL.Connection(ctx, sock)
        if server_name and not _is_ip(server_name):
            conn.set_tlsext_host_name(server_name.encode("idna"))
        conn.set_connect_state()
        error = _handshake(conn, sock, deadline)
        chain = conn.get_peer_cert_chain(as_cryptography=True) or []
        if not chain:
            leaf = conn.get_peer_certificate(as_cryptography=True)
            chain = [leaf] if leaf is not None else []
        if not chain:
            raise ProbeError(f"TLS handshake failed: {error or 'no cert'}")
        if not error:
            with contextlib.suppress(SSL.Error):
                conn.shutdown()  # close_notify: a polite goodbye
        return list(chain)
    finally:
        sock.close()


def _is_ip(name: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in name else socket.AF_INET, name)
    except OSError:
        return False
    return True


# --- chain verification ------------------------------------------------------------------------


def trust_store(settings: CertSettings) -> crypto.X509Store | None:
    """The CAs to verify against, or None when neither the directory nor the file exists."""
    ca_file = settings.ca_file if settings.ca_file and Path(settings.ca_file).is_file() else None
    ca_dir = settings.ca_dir if settings.ca_dir and Path(settings.ca_dir).is_dir() else None
    if ca_file is None and ca_dir is None:
        return None
    store = crypto.X509Store()
    try:
        store.load_locations(ca_file, ca_dir)
    except crypto.Error as exc:
        raise ProbeError(f"cannot load CAs ({ca_file or ''} {ca_dir or ''}): {exc}") from None
    store.set_flags(NO_CHECK_TIME)
    return store


def verify_chain(
    store: crypto.X509Store, chain: Sequence[x509.Certificate]
) -> tuple[str, float | None]:
    """("", earliest CA expiry) when ``chain`` verifies, else (the reason, None)."""
    leaf = crypto.X509.from_cryptography(chain[0])
    untrusted = [crypto.X509.from_cryptography(c) for c in chain[1:]]
    try:
        verified = crypto.X509StoreContext(store, leaf, untrusted).get_verified_chain()
    except crypto.X509StoreContextError as exc:
        return str(exc) or "verification failed", None
    ends = [c.to_cryptography().not_valid_after_utc.timestamp() for c in verified[1:]]
    return "", (min(ends) if ends else None)


# --- one server, every server --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prober:
    """Everything one probe needs; built once per run."""

    ctx: SSL.Context
    store: crypto.X509Store | None
    gateway_names: tuple[str, ...]
    timeout: float
    thresholds: CheckSettings

    @classmethod
    def build(
        cls, settings: CertSettings, gateway_names: Sequence[str], thresholds: CheckSettings
    ) -> Prober:
        return cls(
            _context(settings),
            trust_store(settings),
            tuple(gateway_names),
            settings.connect_timeout,
            thresholds,
        )

    def probe(self, target: ProbeTarget, now: float) -> CertFinding:
        where = {
            "backend": target.backend,
            "server": target.server,
            "address": target.address,
            "port": target.port,
        }
        sni = self.gateway_names[0] if self.gateway_names else ""
        try:
            chain = fetch_chain(target.address, target.port, sni, self.ctx, self.timeout)
        except ProbeError as exc:
            return replace(unreachable_finding(str(exc)), **where)  # type: ignore[arg-type]
        error, issuers_end = ("", None) if self.store is None else verify_chain(self.store, chain)
        info = cert_info_from_der(
            chain[0].public_bytes(Encoding.DER), self.store is not None, error, issuers_end
        )
        finding = evaluate(info, self.gateway_names, now, self.thresholds)
        return replace(finding, **where)  # type: ignore[arg-type]


def probe_all(prober: Prober, wanted: Iterable[ProbeTarget], now: float) -> CertReport:
    """Probe every target (in parallel, bounded) and gather the report."""
    todo = sorted(set(wanted), key=lambda t: (t.backend, t.server))
    if not todo:
        return CertReport((), now)
    with ThreadPoolExecutor(
        max_workers=min(MAX_PARALLEL, len(todo)), thread_name_prefix="certprobe"
    ) as pool:
        findings = tuple(pool.map(lambda t: prober.probe(t, now), todo))
    return CertReport(findings, now)


# --- the sidecar's own files ------------------------------------------------------------------


def check_local_files(
    paths: Iterable[str], now: float, thresholds: CheckSettings
) -> tuple[CertFinding, ...]:
    """Expiry of every certificate in each PEM file (Consul client certificate, CA bundles)."""
    findings: list[CertFinding] = []
    for path in sorted({p for p in paths if p}):
        try:
            certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            findings.append(CertFinding(Severity.WARNING, (f"cannot read: {exc}",), server=path))
            continue
        ends = [c.not_valid_after_utc.timestamp() for c in certs]
        level, reason = expiry_verdict(min(ends), now, thresholds)
        findings.append(
            CertFinding(
                level,
                (reason,) if reason else (),
                days_left=round((min(ends) - now) / 86400.0, 2),
                fails_clients=min(ends) <= now,
                subject=certs[0].subject.rfc4514_string(),
                server=path,
            )
        )
    return tuple(findings)


# --- the child process of health.certjob ----------------------------------------------------


def _answer(request: ProbeRequest) -> CertReport:
    try:
        prober = Prober.build(request.certs, request.gateway_names, request.thresholds)
        report = probe_all(prober, request.targets, request.now)
    except ProbeError as exc:  # the client certificate or the CAs cannot be loaded
        report = CertReport((CertFinding(Severity.WARNING, (str(exc),), server="certs"),))
    local = check_local_files(request.local_files, request.now, request.thresholds)
    return CertReport(report.findings + local, request.now)


def main() -> int:
    """The child: one JSON request per line on stdin, one report per line on stdout; exits
    at the end of stdin or after ``argv[1]`` seconds (``LINGER``) without a request."""
    # Before the first byte from a backend: this child dials what the catalog names and
    # parses what comes back, and needs no capability for it (a systemd install hands the
    # daemon's children CAP_NET_BIND_SERVICE through the ambient set, for HAProxy's sake).
    for note in renounce_capabilities():
        log.debug("certificate probe: %s", note)
    linger = float(sys.argv[1]) if len(sys.argv) > 1 else LINGER
    poller = select.poll()
    poller.register(sys.stdin.fileno(), select.POLLIN)
    while poller.poll(linger * 1000):
        line = sys.stdin.buffer.readline()  # one request at a time: nothing else is buffered
        if not line:
            return 0
        sys.stdout.buffer.write(encode_report(_answer(ProbeRequest.decode(line))) + b"\n")
        sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``sidecar register``: put the local DIRAC services into the local Consul agent (adapter).

Runs on a DIRAC service host or inside its container (or beside it), not on the gateway. It
reads the DIRAC cfg files, plans the registrations with the pure ``sidecar.register.plan``,
registers each service with the local agent (``PUT /v1/agent/service/register``) and then feeds one
TTL check per service: every ``interval`` seconds it connects to the service's real port with
the host certificate as client certificate, verifying the server's chain against the CA
directory, and reports pass or fail (with the error as the check's note). For ``dips``
services it makes a DISET ``ping`` RPC (mode "ping", the default: what LHCb's checks did, and
it leaves no error in the service's log); a bare TLS handshake (mode "tls", and always for
``https`` services) makes DISET log "Invalid action proposal ... Peer closed connection".

Why a TTL check fed from here: Consul's ``TCP`` check only proves that something accepts
connections, and script checks are disabled on many agents (``enable_script_checks`` is off by
default since Consul 1.8 hardening). If this process dies, the TTL expires and the instance goes
critical, and Consul removes it after ``deregister_after``. On SIGTERM or SIGINT (and on any
exit through Python) every service is deregistered.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sidecar.base.errors import CatalogError, ConfigError
from sidecar.consul.client import ConsulClient
from sidecar.consul.http import ConsulHTTP, expect_ok
from sidecar.register.plan import (
    Credentials,
    DiracConfig,
    Registration,
    parse_dirac_cfg,
)

log = logging.getLogger(__name__)
DEFAULT_DIRAC_CFG = "/opt/dirac/etc/dirac.cfg"


# --- files --------------------------------------------------------------------------------
REGISTER = "/v1/agent/service/register"
DEREGISTER = "/v1/agent/service/deregister/"
CHECK_PASS, CHECK_FAIL = "/v1/agent/check/pass/", "/v1/agent/check/fail/"


def config_paths(option: str | None, env: Mapping[str, str]) -> list[str]:
    """The cfg files: ``--dirac-cfg`` (comma-separated), else ``$DIRACSYSCONFIG``, else
    ``/opt/dirac/etc/dirac.cfg``."""
    raw = option or env.get("DIRACSYSCONFIG") or DEFAULT_DIRAC_CFG
    return [p.strip() for p in raw.split(",") if p.strip()]


def read_dirac_config(paths: Sequence[str]) -> DiracConfig:
    """Read and merge the cfg files; ``ConfigError`` names the file that cannot be read."""
    texts = []
    for path in paths:
        try:
            texts.append((path, Path(path).read_text(encoding="utf-8")))
        except OSError as exc:
            raise ConfigError(path, "", f"cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(path, "", "not UTF-8 text") from None
    return parse_dirac_cfg(texts)


@dataclass(frozen=True, slots=True)
class HostCredentials:
    cert: str
    key: str
    ca_dir: str


def pick_credentials(
    candidates: Credentials,
    cert: str | None = None,
    key: str | None = None,
    ca_dir: str | None = None,
) -> HostCredentials:
    """Flags first, then the first candidate that exists; ``ConfigError`` when none does."""

    def first(flag: str | None, found: tuple[str, ...], what: str, is_dir: bool) -> str:
        if flag:
            return flag
        for path in found:
            if Path(path).is_dir() if is_dir else Path(path).is_file():
                return path
        raise ConfigError("/DIRAC/Security", what, f"not found (looked in {', '.join(found)})")

    return HostCredentials(
        first(cert, candidates.cert, "CertFile", False),
        first(key, candidates.key, "KeyFile", False),
        first(ca_dir, candidates.ca_dir, "CALocation", True),
    )


# --- the health check ---------------------------------------------------------------------


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


# --- Consul ---------------------------------------------------------------------------------


def _agent(client: ConsulClient, what: str, path: str, body: Any = None, **query: str) -> None:
    """One PUT to the local agent; anything but HTTP 200 is a ``CatalogError`` naming ``what``."""
    try:
        reply = ConsulHTTP(client).put(path, body, tuple(query.items()))
    except CatalogError as exc:
        raise CatalogError(f"{what}: {exc}") from None
    expect_ok(reply, what)


@dataclass
class Registrar:
    """Registers, feeds and deregisters a set of services in the local agent."""

    client: ConsulClient
    registrations: tuple[Registration, ...]
    creds: HostCredentials
    check_host: str = "127.0.0.1"
    check_published: bool = False  # dial address:published port instead of host:real port
    interval: float = 10.0
    deregister_after: str = "10m"
    timeout: float = 5.0
    retry_for: float = 60.0  # seconds to keep trying the first registration
    mode: str = "ping"  # "ping": DISET ping for dips services; "tls": handshake only

    @property
    def ttl(self) -> str:
        return f"{max(3 * self.interval, 5.0):g}s"

    def register(self) -> None:
        done: list[Registration] = []
        try:
            for reg in self.registrations:
                payload = reg.payload(self.ttl, self.deregister_after)
                _agent(self.client, f"register {reg.service_id}", REGISTER, payload)
                done.append(reg)
                svc = reg.service
                log.info(
                    "registered %s (%s) as %s on port %d, meta %s",
                    svc.path, svc.protocol, reg.service_id, reg.port, dict(reg.meta),
                )  # fmt: skip
        except CatalogError:
            self.deregister(done)
            raise

    def deregister(self, which: Sequence[Registration] | None = None) -> list[str]:
        """Deregister (best effort); returns the errors."""
        errors = []
        for reg in self.registrations if which is None else which:
            try:
                what, path = f"deregister {reg.service_id}", DEREGISTER + reg.service_id
                _agent(self.client, what, path)
                log.info("deregistered %s", reg.service_id)
            except CatalogError as exc:
                errors.append(str(exc))
                log.warning("%s", exc)
        return errors

    def target(self, reg: Registration) -> tuple[str, int]:
        if self.check_published:
            return reg.address or self.check_host, reg.port
        return self.check_host, reg.service.port

    def probe(self, ctx: ssl.SSLContext, reg: Registration) -> tuple[bool, str]:
        """One health probe: a DISET ping (dips, mode "ping") or a TLS handshake."""
        host, port = self.target(reg)
        if self.mode == "ping" and reg.service.protocol == "dips":
            return diset_ping(ctx, host, port, reg.service.path, self.timeout)
        return tls_handshake(ctx, host, port, self.timeout)

    def check_once(self, ctx: ssl.SSLContext) -> dict[str, bool]:
        """One handshake per service, reported to its TTL check; re-registers a service the
        agent forgot (agent restarted)."""
        results = {}
        for reg in self.registrations:
            ok, note = self.probe(ctx, reg)
            results[reg.service_id] = ok
            feed = (CHECK_PASS if ok else CHECK_FAIL) + reg.check_id
            try:
                _agent(self.client, f"update check {reg.check_id}", feed, note=note[:1000])
            except CatalogError as exc:
                log.warning("%s; registering %s again", exc, reg.service_id)
                try:
                    payload = reg.payload(self.ttl, self.deregister_after)
                    _agent(self.client, f"register {reg.service_id}", REGISTER, payload)
                except CatalogError as again:
                    log.warning("%s", again)
            (log.debug if ok else log.warning)("%s: %s", reg.service_id, note)
        return results

    def register_with_retry(self, stop: threading.Event) -> bool:
        """Register, retrying with backoff (the agent may start after us) for ``retry_for``
        seconds; False when stopped meanwhile. ``CatalogError`` once the time is up."""
        deadline, delay = time.monotonic() + self.retry_for, 1.0
        while True:
            try:
                self.register()
                return True
            except CatalogError as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("%s; retrying in %.0f s", exc, delay)
            if stop.wait(delay):
                return False
            delay = min(2 * delay, 30.0)

    def run(self, stop: threading.Event) -> int:
        """Register, feed the checks until ``stop`` is set, deregister. Returns the exit code."""
        ctx = tls_context(self.creds)
        if not self.register_with_retry(stop):
            return 0
        try:
            while not stop.is_set():
                started = time.monotonic()
                self.check_once(ctx)
                stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        finally:
            errors = self.deregister()
        return 1 if errors else 0


def default_instance() -> str:
    """A per-host part for service IDs: the short host name."""
    return socket.gethostname().split(".")[0] or "node"


def environment() -> Mapping[str, str]:
    return os.environ


def explain(registrations: Sequence[Registration]) -> list[str]:
    """Human lines for ``--dry-run``."""
    lines = []
    for reg in registrations:
        meta = " ".join(f"{k}={v}" for k, v in reg.meta)
        addr = reg.address or "(node address)"
        lines.append(
            f"{reg.service_id}: {reg.name} {addr}:{reg.port} (listens on {reg.service.port}) "
            f"tags={','.join(reg.tags)} {meta}"
        )
    return lines

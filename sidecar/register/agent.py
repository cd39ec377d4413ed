"""``sidecar register``: put the local DIRAC services into the local Consul agent (adapter).

Runs on a DIRAC service host or inside its container (or beside it), not on the gateway. It
reads the DIRAC cfg files, plans the registrations with the pure ``sidecar.register.plan``,
registers each service with the local agent (``PUT /v1/agent/service/register``) and then feeds
one TTL check per service (the probe: ``register.probe``): every ``interval`` seconds it
connects to the service's real port with the host certificate as client certificate, verifying
the server's chain against the CA directory, and reports pass or fail (with the error as the
check's note). For ``dips`` services it makes a DISET ``ping`` RPC (mode "ping", the default:
what LHCb's checks did, and it leaves no error in the service's log); a bare TLS handshake (mode
"tls", and always for ``https`` services) makes DISET log "Invalid action proposal ... Peer
closed connection".

Why a TTL check fed from here: Consul's ``TCP`` check only proves that something accepts
connections, and script checks are disabled on many agents (``enable_script_checks`` is off by
default since Consul 1.8 hardening). If this process dies, the TTL expires and the instance goes
critical, and Consul removes it after ``deregister_after``. On SIGTERM or SIGINT (and on any
exit through Python) every service is deregistered.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.base.errors import CatalogError, ConfigError
from sidecar.consul.client import ConsulClient
from sidecar.consul.http import ConsulHTTP, expect_ok
from sidecar.register.localcfg import DiracConfig, parse_dirac_cfg
from sidecar.register.plan import Credentials, Registration
from sidecar.register.probe import HostCredentials, diset_ping, tls_context, tls_handshake

log = logging.getLogger(__name__)
DEFAULT_DIRAC_CFG = "/opt/dirac/etc/dirac.cfg"


# --- files --------------------------------------------------------------------------------


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


# --- Consul ---------------------------------------------------------------------------------

REGISTER = "/v1/agent/service/register"
DEREGISTER = "/v1/agent/service/deregister/"
CHECK_PASS, CHECK_FAIL = "/v1/agent/check/pass/", "/v1/agent/check/fail/"


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

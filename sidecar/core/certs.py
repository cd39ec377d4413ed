"""Certificate checks: does every backend certificate work for clients of the gateway? (pure)

Sits beside the pipeline, after apply: ``sidecar.health.certprobe`` (the adapter) connects to each
backend server, reads its certificate chain and verifies it against the CA directory; this
module turns what it read into findings. Everything here takes values (DER bytes, epoch
seconds, names) and returns values: no sockets, no files, no clock.

DIRAC clients check the URL host (a gateway name) against the server certificate the way
OpenSSL's ``X509_check_host`` does (M2Crypto ``set1_host``): subjectAltName DNS entries, with
RFC 6125 wildcards in the left-most label only; the subject CN only when the certificate has no
DNS SAN at all; an IP address only against IP SANs. Through a passthrough gateway that
certificate is the backend's, so it must cover *every* gateway name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.base.validate import hostport
from sidecar.config.ops import CheckSettings
from sidecar.core.hostnames import dns_name_matches, ip_of
from sidecar.core.model import DesiredState, Problem, ServerState
from sidecar.core.severity import Severity, worst

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What matters of one server certificate (the leaf), as read by the probe."""

    subject: str
    common_names: tuple[str, ...]
    dns_names: tuple[str, ...]  # subjectAltName DNS entries
    ip_addresses: tuple[str, ...]  # subjectAltName IP entries, canonical text
    not_before: float  # seconds since the epoch
    not_after: float
    chain_checked: bool = False  # False: no CA directory or file to verify against
    chain_error: str = ""  # why the chain does not verify; "" when it does (or unchecked)
    issuers_not_after: float | None = None  # earliest expiry of the CAs of the verified chain


@dataclass(frozen=True, slots=True)
class CertFinding:
    """The verdict on one certificate: where it was found, its status and the reasons."""

    status: Severity
    problems: tuple[str, ...] = ()
    days_left: float | None = None
    missing_names: tuple[str, ...] = ()
    fails_clients: bool = False  # clients fail today: name missing, expired, untrusted
    subject: str = ""
    backend: str = ""  # HAProxy backend (System_Service); "" for a local file
    server: str = ""  # HAProxy server slot name, or the file path for a local file
    address: str = ""
    port: int = 0

    @property
    def where(self) -> str:
        if not self.backend:
            return self.server
        return f"{self.backend}/{self.server} ({hostport(self.address, self.port)})"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["status"] = self.status.label
        data["where"] = self.where
        return data


# --- reading a certificate --------------------------------------------------------------------


def cert_info_from_der(
    der: bytes,
    chain_checked: bool = False,
    chain_error: str = "",
    issuers_not_after: float | None = None,
) -> CertInfo:
    """Parse the leaf certificate (DER); raises ValueError when it is not a certificate."""
    # imported here: only the probe's child process parses certificates (health.certjob), and
    # the daemon, which imports this module for the judgement, must not carry cryptography
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    cns = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        common_names=cns,
        dns_names=dns,
        ip_addresses=ips,
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
        chain_checked=chain_checked,
        chain_error=chain_error,
        issuers_not_after=issuers_not_after,
    )


# --- which names a certificate covers -------------------------------------------------------


def name_covered(info: CertInfo, name: str) -> bool:
    """Whether a client connecting to ``name`` accepts this certificate's names."""
    ip = ip_of(name)
    if ip is not None:
        return any(ip_of(entry) == ip for entry in info.ip_addresses)
    candidates = info.dns_names if info.dns_names else info.common_names
    return any(dns_name_matches(pattern, name) for pattern in candidates)


def missing_names(info: CertInfo, gateway_names: Iterable[str]) -> tuple[str, ...]:
    return tuple(name for name in gateway_names if not name_covered(info, name))


# --- evaluation -------------------------------------------------------------------------------


def expiry_verdict(
    not_after: float, now: float, thresholds: CheckSettings, what: str = "certificate"
) -> tuple[Severity, str]:
    """Severity and reason ("" when OK) for a certificate expiring at ``not_after``."""
    days = (not_after - now) / DAY
    if days <= 0:
        return Severity.CRITICAL, f"{what} expired {-days:.1f} days ago"
    if days < thresholds.cert_days_critical:
        return Severity.CRITICAL, f"{what} expires in {days:.1f} days"
    if days < thresholds.cert_days_warning:
        return Severity.WARNING, f"{what} expires in {days:.0f} days"
    return Severity.OK, ""


def evaluate(
    info: CertInfo, gateway_names: Sequence[str], now: float, thresholds: CheckSettings
) -> CertFinding:
    """The verdict on one server certificate for clients that use ``gateway_names``."""
    levels: list[Severity] = [Severity.OK]
    problems: list[str] = []
    fails = False
    missing = missing_names(info, gateway_names)
    if missing:
        levels.append(Severity.CRITICAL)
        problems.append("subjectAltName lacks " + ", ".join(missing))
        fails = True
    if info.not_before > now:
        levels.append(Severity.CRITICAL)
        problems.append("certificate not valid yet")
        fails = True
    level, reason = expiry_verdict(info.not_after, now, thresholds)
    if reason:
        levels.append(level)
        problems.append(reason)
        fails = fails or info.not_after <= now
    if not info.chain_checked:
        levels.append(Severity.WARNING)
        problems.append("chain not checked: no CA directory or file")
    elif info.chain_error:
        levels.append(Severity.CRITICAL)
        problems.append(f"chain does not verify: {info.chain_error}")
        fails = True
    elif info.issuers_not_after is not None:
        level, reason = expiry_verdict(info.issuers_not_after, now, thresholds, "issuing CA")
        if reason:
            levels.append(level)
            problems.append(reason)
    return CertFinding(
        status=worst(levels),
        problems=tuple(problems),
        days_left=round((info.not_after - now) / DAY, 2),
        missing_names=missing,
        fails_clients=fails,
        subject=info.subject,
    )


def unreachable(error: str) -> CertFinding:
    """A server whose certificate could not be read (down, not TLS): nothing is known."""
    return CertFinding(status=Severity.WARNING, problems=(f"not checked: {error}",))


# --- the report -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertReport:
    """Every finding of one run, with an overall status and a one-line summary."""

    findings: tuple[CertFinding, ...]
    checked_at: float = 0.0

    @property
    def status(self) -> Severity:
        return worst(f.status for f in self.findings) if self.findings else Severity.OK

    @property
    def failing(self) -> tuple[CertFinding, ...]:
        return tuple(f for f in self.findings if f.fails_clients)

    @property
    def min_days_left(self) -> float | None:
        days = [f.days_left for f in self.findings if f.days_left is not None]
        return min(days) if days else None

    @property
    def summary(self) -> str:
        total = len(self.findings)
        if not total:
            return "certificates: nothing to check"
        bad = [f for f in self.findings if f.status is not Severity.OK]
        if not bad:
            days = self.min_days_left
            first = f", first expiry in {days:.0f} days" if days is not None else ""
            return f"certificates OK: {total} checked{first}"
        bad.sort(key=lambda f: (-int(f.status), f.where))
        shown = "; ".join(f"{f.where}: {', '.join(f.problems)}" for f in bad[:3])
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        return f"certificates {self.status.label}: {len(bad)} of {total}: {shown}{more}"

    def to_status(self) -> dict[str, Any]:
        """The compact form the daemon stores in status.json under ``certs``."""
        return {
            "status": self.status.label,
            "summary": self.summary,
            "checked_at": self.checked_at,
            "failing": len(self.failing),
            "min_days_left": self.min_days_left,
            "servers": [
                {
                    "backend": f.backend,
                    "server": f.server,
                    "days_left": f.days_left,
                    "status": f.status.label,
                    "missing_names": len(f.missing_names),
                }
                for f in self.findings
                if f.backend
            ],
        }

    def to_dict(self) -> dict[str, Any]:
        data = self.to_status()
        data["findings"] = [f.to_dict() for f in self.findings]
        del data["servers"]
        return data


def failing_servers(report: CertReport) -> frozenset[tuple[str, int]]:
    """``(address, port)`` of every server whose certificate would fail clients."""
    return frozenset((f.address, f.port) for f in report.failing if f.backend)


def exclude_failing(desired: DesiredState, failing: frozenset[tuple[str, int]]) -> DesiredState:
    """Drain (not remove: names stay stable) the ready servers in ``failing``; report each."""
    if not failing:
        return desired
    backends = []
    problems = list(desired.problems)
    for backend in desired.backends:
        servers = []
        for server in backend.servers:
            if server.state is ServerState.READY and (server.address, server.port) in failing:
                server = dataclasses.replace(server, state=ServerState.DRAIN)
                where = hostport(server.address, server.port)
                problems.append(
                    Problem(
                        f"{backend.name}/{server.name} {where}",
                        "drained: its certificate would fail clients",
                    )
                )
            servers.append(server)
        backends.append(dataclasses.replace(backend, servers=tuple(servers)))
    return DesiredState(tuple(backends), tuple(sorted(problems)))

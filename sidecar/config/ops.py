"""The operations sections: ``[check]``, ``[certs]`` and ``[status]`` (pure).

Thresholds of ``sidecar check``, the certificate preflight of every backend and the loopback
``/metrics`` ``/healthz`` ``/readyz`` endpoint. Loaded by ``config.loader`` like every section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from sidecar.base import validate
from sidecar.config.base import Issue, Section
from sidecar.config.rules import Rule
from sidecar.config.types import Count, FilePath, Flag, PositiveSeconds, Text


@dataclass(frozen=True, slots=True)
class CheckSettings(Section):
    """Thresholds of ``sidecar check`` (durations, counts, days)."""

    heartbeat_warning: PositiveSeconds = 10.0  # daemon heartbeat older than this: WARNING
    heartbeat_critical: PositiveSeconds = 30.0  # ... and this: CRITICAL (hung or dead)
    catalog_age_warning: PositiveSeconds = 60.0  # last good catalog read older: WARNING
    catalog_age_critical: PositiveSeconds = 300.0  # ... and this: CRITICAL (serving old data)
    old_workers_warning: Count = 5  # more old HAProxy workers lingering than this: WARNING
    cert_days_warning: Count = 30  # a certificate expiring within this many days: WARNING
    cert_days_critical: Count = 7  # ... within this many days (or expired): CRITICAL

    def cross_checks(self) -> list[Issue]:
        issues: list[Issue] = []
        if self.heartbeat_warning > self.heartbeat_critical:
            issues.append(("heartbeat_warning", "must be <= heartbeat_critical"))
        if self.catalog_age_warning > self.catalog_age_critical:
            issues.append(("catalog_age_warning", "must be <= catalog_age_critical"))
        if self.cert_days_critical > self.cert_days_warning:
            issues.append(("cert_days_critical", "must be <= cert_days_warning"))
        return issues


@dataclass(frozen=True, slots=True)
class CertSettings(Section):
    """The certificate preflight of every backend server."""

    ca_dir: FilePath = "/etc/grid-security/certificates"  # hashed CA directory (<hash>.0)
    ca_file: FilePath = ""  # CA bundle, in addition to (or instead of) ca_dir
    client_cert: FilePath = ""  # the gateway's own certificate, presented to backends
    client_key: FilePath = ""  # its key (empty: the key is in client_cert)
    interval: PositiveSeconds = 3600.0  # between two runs of the check in the daemon
    exclude_failing: Flag = False  # drain servers whose certificate would fail clients
    connect_timeout: PositiveSeconds = 5.0  # for the TCP connect and the TLS handshake

    def cross_checks(self) -> list[Issue]:
        if self.client_key and not self.client_cert:
            return [("client_key", "needs certs.client_cert")]
        return []


def _listen(value: str) -> str:
    validate.parse_listen(value)
    return value


@dataclass(frozen=True, slots=True)
class StatusSettings(Section):
    """The loopback HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz``."""

    listen: Annotated[Text, Rule(after=_listen)] = "127.0.0.1:9901"  # host:port
    enabled: Flag = True
    idle_timeout: PositiveSeconds = 10.0  # a client connection idle this long is closed

"""Settings of the operations side: ``[check]``, ``[certs]`` and ``[status]`` (pure values).

Frozen dataclasses with their defaults, in the same style as ``sidecar.settings``; the
settings loader registers them as sections. Until it does, callers use :func:`ops_settings`,
which falls back to these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidecar.errors import ConfigError


@dataclass(frozen=True, slots=True)
class CheckSettings:
    """Thresholds of ``sidecar check`` (seconds, counts, days)."""

    heartbeat_warning: float = 10.0  # daemon heartbeat older than this: WARNING
    heartbeat_critical: float = 30.0  # ... and this: CRITICAL (the daemon is hung or dead)
    catalog_age_warning: float = 60.0  # last successful catalog read older than this: WARNING
    catalog_age_critical: float = 300.0  # ... and this: CRITICAL (serving old data)
    old_workers_warning: int = 5  # more old HAProxy workers lingering than this: WARNING
    cert_days_warning: int = 30  # a certificate expiring within this many days: WARNING
    cert_days_critical: int = 7  # ... within this many days (or expired): CRITICAL


@dataclass(frozen=True, slots=True)
class CertSettings:
    """The certificate preflight of every backend server."""

    ca_dir: str = "/etc/grid-security/certificates"  # hashed CA directory (<hash>.0)
    ca_file: str = ""  # CA bundle, in addition to (or instead of) ca_dir
    client_cert: str = ""  # the gateway's own certificate, presented to backends (optional)
    client_key: str = ""  # its key (empty: the key is in client_cert)
    interval: float = 3600.0  # seconds between two runs of the check in the daemon
    exclude_failing: bool = False  # drain servers whose certificate would fail clients
    connect_timeout: float = 5.0  # seconds for the TCP connect and the TLS handshake


@dataclass(frozen=True, slots=True)
class StatusSettings:
    """The loopback HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz``."""

    listen: str = "127.0.0.1:9901"  # host:port ([v6]:port for IPv6)
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class OpsSettings:
    check: CheckSettings
    certs: CertSettings
    status: StatusSettings


def ops_settings(settings: Any) -> OpsSettings:
    """The ``check``, ``certs`` and ``status`` sections of ``settings``, or their defaults."""
    check = getattr(settings, "check", None)
    certs = getattr(settings, "certs", None)
    status = getattr(settings, "status", None)
    return OpsSettings(
        check if isinstance(check, CheckSettings) else CheckSettings(),
        certs if isinstance(certs, CertSettings) else CertSettings(),
        status if isinstance(status, StatusSettings) else StatusSettings(),
    )


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9901"`` -> ``("127.0.0.1", 9901)``; ``"[::1]:9901"`` -> ``("::1", 9901)``."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def check_ops(k: CheckSettings, c: CertSettings, st: StatusSettings, src: str) -> None:
    """The [check], [certs] and [status] checks (called by the settings loader)."""
    if not 0 < k.heartbeat_warning <= k.heartbeat_critical:
        raise ConfigError(
            src, "check.heartbeat_warning", "must be positive and <= heartbeat_critical"
        )
    if not 0 < k.catalog_age_warning <= k.catalog_age_critical:
        raise ConfigError(
            src, "check.catalog_age_warning", "must be positive and <= catalog_age_critical"
        )
    if not 0 <= k.cert_days_critical <= k.cert_days_warning:
        raise ConfigError(
            src, "check.cert_days_critical", "must be between 0 and cert_days_warning"
        )
    if k.old_workers_warning < 0:
        raise ConfigError(src, "check.old_workers_warning", "must not be negative")
    for key in ("interval", "connect_timeout"):
        if getattr(c, key) <= 0:
            raise ConfigError(src, f"certs.{key}", "must be positive")
    if c.client_key and not c.client_cert:
        raise ConfigError(src, "certs.client_key", "needs certs.client_cert")
    try:
        parse_listen(st.listen)
    except ValueError as exc:
        raise ConfigError(src, "status.listen", str(exc)) from None

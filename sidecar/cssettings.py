"""Settings of the DIRAC CS writer: the ``[dirac_cs]`` section (pure values and checks).

Loaded by ``sidecar.settings`` like every section; kept apart because it is the largest one.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar import validate
from sidecar.durations import parse_duration
from sidecar.errors import ConfigError


@dataclass(frozen=True, slots=True)
class CSSettings:
    enabled: bool = False
    file: str = "/opt/dirac/etc/dirac.cfg"
    layout: str = "v9"  # "v9": /Systems/<S>/URLs/<Svc>; "v8": /Systems/<S>/<Instance>/URLs/<Svc>
    setup: str = ""  # v8 only: the setup to use; empty = /DIRAC/Setup read from the file
    use_mainservers: bool = False  # write dips://$MAINSERVERS$:<port>/... plus MainServers
    failover_names: tuple[str, ...] = ()  # hosts for .../FailoverURLs/<Svc>; empty: left alone
    prune: bool = False  # drop gateway URLs of services that left the catalog (never by default)
    backup_dir: str = ""  # where timestamped backups go; empty: next to the file
    backups_keep: int = 10  # newest backups kept, older ones deleted
    configuration_servers: bool = False  # keep /DIRAC/Configuration/Servers on the gateway
    master_server: bool = False  # and /DIRAC/Configuration/MasterServer (first gateway name)
    backend: str = "file"  # "file": edit ``file``; "csapi": commit through DIRAC's CSAPI
    csapi_retries: int = 3  # CSAPI commits retried (after a re-download) on version conflicts
    discover_gateways: bool = False  # URL lists follow the live (ready) gateways in Consul
    lock_key: str = "dirac-sidecar/cs-writer/lock"  # Consul KV key of the one-writer lock
    lock_ttl: str = "15s"  # session TTL (10s-24h); a dead holder is replaced within 2*TTL+delay
    lock_delay: str = "5s"  # Consul lock-delay after the holder's session is invalidated (0-60s)


def check_cs(cs: CSSettings, src: str) -> None:
    """The dirac_cs checks (called from ``_check``)."""
    if cs.layout not in ("v8", "v9"):
        raise ConfigError(src, "dirac_cs.layout", 'must be "v8" or "v9"')
    if cs.setup:
        if cs.layout != "v8":
            raise ConfigError(src, "dirac_cs.setup", "only with layout v8 (v9 has no setups)")
        try:
            validate.consul_service_name(cs.setup)  # the same alphabet: no "/" and no spaces
        except ValueError:
            raise ConfigError(src, "dirac_cs.setup", f"{cs.setup!r} is not a setup name") from None
    for i, name in enumerate(cs.failover_names):
        try:
            validate.host(name, "failover name")
        except ValueError as exc:
            raise ConfigError(src, f"dirac_cs.failover_names[{i}]", str(exc)) from None
    if cs.backups_keep < 1:
        raise ConfigError(src, "dirac_cs.backups_keep", "must be at least 1")
    if cs.master_server and not cs.configuration_servers:
        raise ConfigError(src, "dirac_cs.master_server", "needs configuration_servers = true")
    if cs.backend not in ("file", "csapi"):
        raise ConfigError(src, "dirac_cs.backend", 'must be "file" or "csapi"')
    if cs.csapi_retries < 1:
        raise ConfigError(src, "dirac_cs.csapi_retries", "must be at least 1")
    key = cs.lock_key
    if not key or key.startswith("/") or key.endswith("/") or " " in key:
        raise ConfigError(src, "dirac_cs.lock_key", "must be a KV key such as a/b/lock")
    for name, low, high in (("lock_ttl", 10.0, 86400.0), ("lock_delay", 0.0, 60.0)):
        try:
            seconds = parse_duration(getattr(cs, name))
        except ValueError as exc:
            raise ConfigError(src, f"dirac_cs.{name}", str(exc)) from None
        if not low <= seconds <= high:
            raise ConfigError(src, f"dirac_cs.{name}", f"must be between {low:g}s and {high:g}s")

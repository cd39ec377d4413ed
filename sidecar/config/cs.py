"""The ``[dirac_cs]`` settings section: how the DIRAC Configuration Service is kept (pure).

Read by the CS writer, the one-writer lock and the gateway registry; loaded by
``config.loader`` like every section. The largest section, hence its own module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from annotated_types import Ge, Le

from sidecar.base import validate
from sidecar.config.base import Issue, Section
from sidecar.config.rules import Rule
from sidecar.config.types import FilePath, Flag, HostName, PositiveCount, Seconds, Text


class Layout(StrEnum):
    V9 = "v9"  # /Systems/<System>/URLs/<Service>
    V8 = "v8"  # /Systems/<System>/<Instance>/URLs/<Service>, /DIRAC/Setups/<Setup>/<System>


class CSBackend(StrEnum):
    FILE = "file"  # edit a CS file (the master's etc/<Name>.cfg or a local dirac.cfg)
    CSAPI = "csapi"  # commit through DIRAC's CSAPI


def _setup(value: str) -> str:
    if value:
        try:
            validate.consul_service_name(value)  # the same alphabet: no "/" and no spaces
        except ValueError:
            raise ValueError(f"{value!r} is not a setup name") from None
    return value


def _allowed(value: str) -> str:
    validate.host(value[1:] if value.startswith(".") else value, "gateway name")
    return value.lower()


def _kv_key(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*", value, re.ASCII):
        raise ValueError("must be a Consul KV key such as a/b/lock")
    return value


@dataclass(frozen=True, slots=True)
class CSSettings(Section):
    enabled: Flag = False
    file: FilePath = "/opt/dirac/etc/dirac.cfg"
    layout: Layout = Layout.V9
    setup: Annotated[Text, Rule(after=_setup)] = ""  # v8: empty = /DIRAC/Setup in the file
    use_mainservers: Flag = False  # write dips://$MAINSERVERS$:<port>/... plus MainServers
    failover_names: tuple[HostName, ...] = ()  # hosts for .../FailoverURLs/<Svc>
    prune: Flag = False  # drop gateway URLs of services that left the catalog
    backup_dir: FilePath = ""  # where timestamped backups go; empty: next to the file
    backups_keep: PositiveCount = 10
    configuration_servers: Flag = False  # keep /DIRAC/Configuration/Servers on the gateway
    master_server: Flag = False  # and /DIRAC/Configuration/MasterServer (first gateway name)
    backend: CSBackend = CSBackend.FILE
    csapi_retries: PositiveCount = 3
    discover_gateways: Flag = False  # URL lists follow the live (ready) gateways in Consul
    # Discovered names accepted: ".example.org" (a suffix) or an exact name. Empty: the
    # parent domains of [gateway] names (dirac-gw.example.org -> ".example.org").
    discover_allowed: tuple[Annotated[Text, Rule(after=_allowed)], ...] = ()
    lock_key: Annotated[Text, Rule(after=_kv_key)] = "dirac-sidecar/cs-writer/lock"
    lock_ttl: Annotated[Seconds, Ge(10.0), Le(86400.0)] = 15.0
    lock_delay: Annotated[Seconds, Ge(0.0), Le(60.0)] = 1.0
    # The daemon's session is also bound to a TTL check of the writer on its local agent:
    # a dead or frozen writer loses the lock this long after its last pass (0: session TTL only)
    lock_check_ttl: Annotated[Seconds, Ge(0.0), Le(60.0)] = 2.0

    def cross_checks(self) -> list[Issue]:
        issues: list[Issue] = []
        if self.setup and self.layout is not Layout.V8:
            issues.append(("setup", "only with layout v8 (v9 has no setups)"))
        if self.master_server and not self.configuration_servers:
            issues.append(("master_server", "needs configuration_servers = true"))
        if 0 < self.lock_check_ttl < 1:
            issues.append(("lock_check_ttl", "at least 1s (0 turns the writer check off)"))
        return issues

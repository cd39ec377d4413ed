"""The settings schema: every section, key, type, bound and default in one place (pure).

Sits beside the pipeline, not in it: ``config.loader`` builds one ``Settings`` value from the
TOML file and the environment (again on SIGHUP) and hands it to every stage. Every key and its
default is documented in the shipped ``sidecar.example.toml``; ``tests/unit/test_settings.py``
keeps that file and these defaults in agreement. Durations are floats of seconds (see
``config.durations``); closed sets are enums; the Consul token is a ``Secret`` so that no
``repr``, log line or exception shows it. Plain dataclasses (``config.base``): importing this
module loads no validation library.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from annotated_types import Ge, Gt, Le, MinLen

from sidecar import data
from sidecar.base import validate
from sidecar.config.base import Issue, Section
from sidecar.config.cs import CSSettings
from sidecar.config.drain import DrainSettings
from sidecar.config.ops import CertSettings, CheckSettings, StatusSettings
from sidecar.config.rules import Pairs, Rule, Secret
from sidecar.config.types import (
    Count,
    FilePath,
    Flag,
    HostName,
    IPAddress,
    Number,
    Port,
    PortOrZero,
    PositiveCount,
    PositiveSeconds,
    Seconds,
    StrictStr,
    Text,
    Word,
)

DEFAULT_CONFIG = "/etc/dirac-sidecar/sidecar.toml"


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


def _non_empty(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


def _consul_name(value: str) -> str:
    return validate.consul_service_name(value) if value else value


@dataclass(frozen=True, slots=True)
class ConsulSettings(Section):
    address: Annotated[Text, Rule(after=_http_url)] = "http://127.0.0.1:8500"
    tag: Annotated[Word, Rule(after=_non_empty)] = "dirac"
    datacenter: Word = ""
    token: Secret = Secret("")  # never shown by repr, logs or status
    token_file: FilePath = ""
    ca_file: FilePath = ""
    cert_file: FilePath = ""
    key_file: FilePath = ""
    verify: Flag = True
    timeout: PositiveSeconds = 10.0  # every plain request; added to blocking ones
    wait: Annotated[Seconds, Ge(1.0), Le(600.0)] = 600.0  # a blocking query parks this long
    probe_interval: PositiveSeconds = 15.0  # the agent asked this often whether it answers
    include_warning: Flag = False
    stale: Flag = False
    max_stale: PositiveSeconds = 30.0  # X-Consul-LastContact accepted on stale reads
    retry_min: PositiveSeconds = 0.25
    retry_max: PositiveSeconds = 60.0
    rate_burst: PositiveCount = 20
    rate_interval: PositiveSeconds = 0.01  # per token, per watch, once the burst is spent
    stale_after: PositiveSeconds = 60.0  # catalog data older than this counts as stale
    reset_grace: Seconds = 120.0  # after the index goes backwards, absent instances stay
    canary_service: Annotated[Text, Rule(after=_consul_name)] = "consul"

    def cross_checks(self) -> list[Issue]:
        if self.retry_min > self.retry_max:
            return [("retry_min", "must be <= retry_max")]
        return []


@dataclass(frozen=True, slots=True)
class GatewaySettings(Section):
    names: Annotated[tuple[HostName, ...], MinLen(1)] = ("dirac-gw.example.org",)
    bind: IPAddress = "0.0.0.0"
    keep_vanished_services: Flag = True
    # Where backends may be: CIDRs. Empty: anywhere but loopback, link-local, multicast,
    # reserved and the gateway's own addresses (the catalog must not make it an open relay).
    backend_networks: tuple[Network, ...] = ()


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not a network such as 10.0.0.0/8") from None


def parse_range(value: str) -> tuple[int, int]:
    """ "9130-9199" -> (9130, 9199); "8443" -> (8443, 8443); ValueError otherwise."""
    low, _, high = value.partition("-")
    try:
        pair = (validate.port(low.strip()), validate.port((high or low).strip()))
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not a port range such as 9130-9199") from None
    if pair[0] > pair[1]:
        raise ValueError(f"{value!r}: the range is empty (low > high)")
    return pair


def _range(value: str) -> str:
    parse_range(value)
    return value


Network = Annotated[StrictStr, Rule(after=_network)]
PortRange = Annotated[StrictStr, Rule(after=_range)]


def _service_path(value: str) -> str:
    parts = value.split("/")
    if len(parts) != 2:
        raise ValueError('expected "System/Service"')
    validate.dirac_name(parts[0], "system")
    validate.dirac_name(parts[1], "service")
    return value


ServicePath = Annotated[str, Rule(after=_service_path)]


@dataclass(frozen=True, slots=True)
class PortSettings(Section):
    map_file: FilePath = ""  # empty: the port map shipped in the package
    overrides: Annotated[tuple[tuple[str, int], ...], Pairs(ServicePath, Port)] = ()
    auto_low: PortOrZero = 20000  # hashed ports for services in no map; 0 rejects them
    auto_high: Port = 29999
    # Public ports a registration's dirac_port may claim ("low-high" or "port"). Empty: the
    # port map's and the overrides' ports and auto_low..auto_high.
    public_ranges: tuple[PortRange, ...] = ()

    def cross_checks(self) -> list[Issue]:
        if self.auto_low and self.auto_low > self.auto_high:
            return [("auto_low", "auto_low..auto_high must be a range in 1-65535")]
        return []

    @property
    def ranges(self) -> tuple[tuple[int, int], ...]:
        """``public_ranges`` as (low, high) pairs."""
        return tuple(parse_range(text) for text in self.public_ranges)


class Balance(StrEnum):
    """HAProxy algorithms that work with dynamic servers (management.txt, ``add server``)."""

    LEASTCONN = "leastconn"
    ROUNDROBIN = "roundrobin"
    FIRST = "first"
    RANDOM = "random"


def _log_target(value: str) -> str:
    """``address [len <n>] [format <f>] facility [level]`` words, nothing that opens a line."""
    if value and not all(validate.haproxy_word(word) for word in value.split(" ")):
        raise ValueError(f"{value[:40]!r} is not an HAProxy log target such as /dev/log local0")
    return value


@dataclass(frozen=True, slots=True)
class HAProxySettings(Section):
    binary: FilePath = "haproxy"
    runtime_dir: FilePath = "/run/dirac-sidecar"
    template: FilePath = ""  # empty: the template shipped in the package
    manage: Flag = True  # start HAProxy when it is not running
    hard_stop_after: PositiveSeconds = 3600.0
    maxconn: Annotated[PositiveCount, Le(10_000_000)] = 8000
    balance: Balance = Balance.LEASTCONN
    timeout_connect: PositiveSeconds = 5.0
    timeout_client: PositiveSeconds = 660.0
    timeout_server: PositiveSeconds = 660.0
    check_inter: PositiveSeconds = 2.0
    check_fall: PositiveCount = 2
    check_rise: PositiveCount = 2
    log_target: Annotated[Text, Rule(after=_log_target)] = ""
    validate_timeout: PositiveSeconds = 30.0
    reload_timeout: PositiveSeconds = 15.0


class Strategy(StrEnum):
    RUNTIME = "runtime"  # the runtime API wherever it can, a reload only where it must
    RELOAD = "reload"  # every change a full reload (render, haproxy -c, reload): the
    # consul-template way, kept as a fallback and as the benchmarks' baseline


@dataclass(frozen=True, slots=True)
class ApplySettings(Section):
    strategy: Strategy = Strategy.RUNTIME
    min_reload_interval: Seconds = 0.0  # 0: reloads are paced only by old workers
    drift_interval: PositiveSeconds = 30.0
    max_old_workers: Count = 10
    max_removal_share: Annotated[Number, Gt(0.0), Le(1.0)] = 0.5
    confirm_delay: PositiveSeconds = 2.0


@dataclass(frozen=True, slots=True)
class LimitSettings(Section):
    """Bounds on what the catalog can make the gateway hold (each is reported when hit)."""

    max_services: Annotated[PositiveCount, Le(100_000)] = 2000
    max_instances: Annotated[PositiveCount, Le(100_000)] = 256  # per DIRAC service
    max_problems: Annotated[PositiveCount, Le(100_000)] = 200  # kept and reported


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


class LogFormat(StrEnum):
    PLAIN = "plain"
    JSON = "json"


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class LogSettings(Section):
    level: Annotated[LogLevel, Rule(before=_upper)] = LogLevel.INFO
    format: LogFormat = LogFormat.PLAIN
    repeat_limit: Count = 5  # the same line at most this often per window (0: no limit)
    repeat_window: PositiveSeconds = 60.0


@dataclass(frozen=True, slots=True)
class Settings(Section):
    consul: ConsulSettings = ConsulSettings()
    gateway: GatewaySettings = GatewaySettings()
    ports: PortSettings = PortSettings()
    haproxy: HAProxySettings = HAProxySettings()
    apply: ApplySettings = ApplySettings()
    dirac_cs: CSSettings = CSSettings()
    log: LogSettings = LogSettings()
    check: CheckSettings = CheckSettings()
    certs: CertSettings = CertSettings()
    status: StatusSettings = StatusSettings()
    limits: LimitSettings = LimitSettings()
    drain: DrainSettings = DrainSettings()
    # Set by the loader, not by the file:
    source: str = "<defaults>"
    consul_configured: bool = False  # an address came from the file or CONSUL_HTTP_ADDR

    @property
    def runtime_dir(self) -> Path:
        return Path(self.haproxy.runtime_dir)

    @property
    def template_path(self) -> Path:
        return Path(self.haproxy.template) if self.haproxy.template else data.path(data.TEMPLATE)

    @property
    def port_map_path(self) -> Path:
        return Path(self.ports.map_file) if self.ports.map_file else data.path(data.PORT_MAP)


# The sections a settings file may have, in the order the example documents them.
SECTIONS: dict[str, type[Section]] = {
    f.name: type(f.default) for f in fields(Settings) if isinstance(f.default, Section)
}

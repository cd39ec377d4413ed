"""Typed settings: defaults in one place, TOML loading, validation with key paths.

Sits beside the pipeline, not in it: the CLI loads ``Settings`` once (and again on SIGHUP) and
hands the value to every stage. Loading is pure apart from reading the file and the environment
mapping passed in. Every key and its default is documented in ``configs/sidecar.example.toml``;
``tests/unit/test_settings.py`` keeps that file and these defaults in agreement.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar import validate
from sidecar.cssettings import CSSettings, check_cs
from sidecar.errors import ConfigError
from sidecar.opsettings import CertSettings, CheckSettings, StatusSettings, check_ops

DEFAULT_CONFIG = "/etc/dirac-sidecar/sidecar.toml"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class ConsulSettings:
    address: str = "http://127.0.0.1:8500"
    tag: str = "dirac"
    datacenter: str = ""
    token: str = ""
    token_file: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    verify: bool = True
    timeout: float = 10.0  # seconds, for every non-blocking request and added to blocking ones
    wait: float = 300.0  # seconds a blocking query may park in Consul (max 600)
    include_warning: bool = False
    stale: bool = False
    max_stale: float = 30.0  # seconds of X-Consul-LastContact accepted on stale reads
    retry_min: float = 0.25
    retry_max: float = 60.0
    rate_burst: int = 2
    rate_interval: float = 1.0  # seconds per token, per watch, once the burst is spent
    stale_after: float = 60.0  # catalog data older than this (Consul down) counts as stale
    reset_grace: float = 120.0  # after the index goes backwards, absent instances stay this long
    canary_service: str = "consul"  # always in the catalog; its absence means ACL filtering


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    names: tuple[str, ...] = ("dirac-gw.example.org",)
    bind: str = "0.0.0.0"
    keep_vanished_services: bool = True


@dataclass(frozen=True, slots=True)
class PortSettings:
    map_file: str = ""  # empty: the shipped configs/dirac-port-map.csv
    overrides: tuple[tuple[str, int], ...] = ()  # "System/Service" = port
    auto_low: int = 20000  # services in no map and with no dirac_port get a hashed port here;
    auto_high: int = 29999  # auto_low = 0 rejects them instead


@dataclass(frozen=True, slots=True)
class HAProxySettings:
    binary: str = "haproxy"
    runtime_dir: str = "/run/dirac-sidecar"
    template: str = ""  # empty: the shipped haproxy/haproxy.cfg.j2
    manage: bool = True  # start HAProxy when it is not running
    hard_stop_after: str = "1h"
    maxconn: int = 8000  # HAProxy needs ~2 fds per connection: keep under ulimit -n / 2
    balance: str = "leastconn"
    timeout_connect: str = "5s"
    timeout_client: str = "660s"
    timeout_server: str = "660s"
    check_inter: str = "2s"
    check_fall: int = 2
    check_rise: int = 2
    min_slots: int = 4
    log_target: str = ""  # e.g. "/dev/log local0"; empty: no HAProxy logging
    validate_timeout: float = 30.0
    reload_timeout: float = 15.0


@dataclass(frozen=True, slots=True)
class ApplySettings:
    quiet: float = 0.2  # a burst is applied once the catalog was quiet this long...
    max_delay: float = 2.0  # ...or this long after its first change, whichever comes first
    min_reload_interval: float = 1.0  # reloads are paced; runtime changes are not
    drift_interval: float = 30.0  # compare HAProxy's servers with the desired state this often
    max_old_workers: int = 10  # reloads wait while more old workers than this still drain
    max_removal_share: float = 0.5  # share of a backend one catalog read may remove unconfirmed
    confirm_delay: float = 2.0  # seconds before a held-back removal is re-read and confirmed


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "INFO"
    format: str = "plain"


@dataclass(frozen=True, slots=True)
class Settings:
    consul: ConsulSettings = field(default_factory=ConsulSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    ports: PortSettings = field(default_factory=PortSettings)
    haproxy: HAProxySettings = field(default_factory=HAProxySettings)
    apply: ApplySettings = field(default_factory=ApplySettings)
    dirac_cs: CSSettings = field(default_factory=CSSettings)
    log: LogSettings = field(default_factory=LogSettings)
    check: CheckSettings = field(default_factory=CheckSettings)
    certs: CertSettings = field(default_factory=CertSettings)
    status: StatusSettings = field(default_factory=StatusSettings)
    source: str = "<defaults>"
    consul_configured: bool = False  # an address came from the file or CONSUL_HTTP_ADDR

    @property
    def runtime_dir(self) -> Path:
        return Path(self.haproxy.runtime_dir)

    @property
    def template_path(self) -> Path:
        if self.haproxy.template:
            return Path(self.haproxy.template)
        return REPO_ROOT / "haproxy" / "haproxy.cfg.j2"

    @property
    def port_map_path(self) -> Path:
        if self.ports.map_file:
            return Path(self.ports.map_file)
        return REPO_ROOT / "configs" / "dirac-port-map.csv"


SECTIONS: dict[str, type[Any]] = {
    "consul": ConsulSettings,
    "gateway": GatewaySettings,
    "ports": PortSettings,
    "haproxy": HAProxySettings,
    "apply": ApplySettings,
    "dirac_cs": CSSettings,
    "log": LogSettings,
    "check": CheckSettings,
    "certs": CertSettings,
    "status": StatusSettings,
}


def _coerce(value: object, kind: Any, source: str, key: str) -> object:
    """Check one TOML value against the dataclass field's type."""
    origin = typing.get_origin(kind)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, key, f"expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, key, f"expected an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(source, key, f"expected a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(source, key, f"expected a string, got {value!r}")
        return value
    if origin is tuple and typing.get_args(kind) == (str, ...):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(source, key, "expected a list of strings")
        return tuple(value)
    raise ConfigError(source, key, f"unsupported type {kind}")  # pragma: no cover


def _section(cls: type[Any], raw: Mapping[str, Any], source: str, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    values: dict[str, object] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in raw.items():
        path = f"{prefix}.{key}"
        if cls is PortSettings and key == "overrides":
            values[key] = _overrides(value, source, path)
            continue
        if key not in names:
            raise ConfigError(source, path, "unknown key")
        values[key] = _coerce(value, hints[key], source, path)
    return cls(**values)


def _overrides(raw: object, source: str, path: str) -> tuple[tuple[str, int], ...]:
    if not isinstance(raw, Mapping):
        raise ConfigError(source, path, 'expected a table of "System/Service" = port')
    result: list[tuple[str, int]] = []
    for name, port in raw.items():
        key = f'{path}."{name}"'
        parts = str(name).split("/")
        try:
            if len(parts) != 2:
                raise ValueError('expected "System/Service"')
            validate.dirac_name(parts[0], "system")
            validate.dirac_name(parts[1], "service")
            if isinstance(port, str):
                raise ValueError("the port must be an integer")
            result.append((str(name), validate.port(port)))
        except ValueError as exc:
            raise ConfigError(source, key, str(exc)) from None
    return tuple(sorted(result))


def _check(settings: Settings) -> None:
    """Cross-field and range checks; every failure names its key."""
    src = settings.source
    check_ops(settings.check, settings.certs, settings.status, src)
    c, g, h, p = settings.consul, settings.gateway, settings.haproxy, settings.ports
    if not c.address.startswith(("http://", "https://")):
        raise ConfigError(src, "consul.address", "must start with http:// or https://")
    if not 1.0 <= c.wait <= 600.0:
        raise ConfigError(src, "consul.wait", "must be between 1 and 600 seconds")
    for key in ("timeout", "retry_min", "retry_max", "rate_interval", "stale_after", "max_stale"):
        if getattr(c, key) <= 0:
            raise ConfigError(src, f"consul.{key}", "must be positive")
    if c.rate_burst < 1:
        raise ConfigError(src, "consul.rate_burst", "must be at least 1")
    if not c.tag:
        raise ConfigError(src, "consul.tag", "must not be empty")
    if not g.names:
        raise ConfigError(src, "gateway.names", "needs at least one gateway name")
    for i, name in enumerate(g.names):
        try:
            validate.host(name, "gateway name")
        except ValueError as exc:
            raise ConfigError(src, f"gateway.names[{i}]", str(exc)) from None
    if validate.ip_address(g.bind) is None:
        raise ConfigError(src, "gateway.bind", f"{g.bind!r} is not an IP address")
    if p.auto_low and not 1 <= p.auto_low <= p.auto_high <= 65535:
        raise ConfigError(src, "ports.auto_low", "auto_low..auto_high must be a range in 1-65535")
    if h.balance not in ("leastconn", "roundrobin", "first", "random"):
        raise ConfigError(src, "haproxy.balance", "must be leastconn, roundrobin, first or random")
    if not 1 <= h.min_slots <= 1024:
        raise ConfigError(src, "haproxy.min_slots", "must be between 1 and 1024")
    check_cs(settings.dirac_cs, src)
    a = settings.apply
    for key in ("quiet", "max_delay", "drift_interval", "confirm_delay"):
        if getattr(a, key) <= 0:
            raise ConfigError(src, f"apply.{key}", "must be positive")
    if a.min_reload_interval < 0 or a.max_old_workers < 0:
        raise ConfigError(src, "apply.min_reload_interval", "must not be negative")
    if not 0.0 < a.max_removal_share <= 1.0:
        raise ConfigError(src, "apply.max_removal_share", "must be in (0, 1]")
    if settings.log.format not in ("plain", "json"):
        raise ConfigError(src, "log.format", 'must be "plain" or "json"')


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> bool:
    """Fill consul keys from the consul CLI's variables where the file is silent.

    Returns whether a Consul address was configured (by the file or the environment).
    """
    consul = raw.setdefault("consul", {})
    configured = "address" in consul
    env_map = {
        "CONSUL_HTTP_ADDR": "address",
        "CONSUL_HTTP_TOKEN": "token",
        "CONSUL_HTTP_TOKEN_FILE": "token_file",
        "CONSUL_CACERT": "ca_file",
        "CONSUL_CLIENT_CERT": "cert_file",
        "CONSUL_CLIENT_KEY": "key_file",
    }
    for var, key in env_map.items():
        value = env.get(var)
        if value and key not in consul:
            if key == "address":
                configured = True
                if "://" not in value:
                    scheme = "https" if env.get("CONSUL_HTTP_SSL", "").lower() == "true" else "http"
                    value = f"{scheme}://{value}"
            consul[key] = value
    return configured


def parse_settings(
    raw: Mapping[str, Any], source: str, env: Mapping[str, str], base: Path | None = None
) -> Settings:
    data = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    configured = _apply_env(data, env)
    sections: dict[str, Any] = {}
    for key, value in data.items():
        if key not in SECTIONS:
            raise ConfigError(source, key, "unknown section")
        if not isinstance(value, Mapping):
            raise ConfigError(source, key, "expected a table")
        sections[key] = _section(SECTIONS[key], value, source, key)
    settings = Settings(**sections, source=source, consul_configured=configured)
    settings = _resolve_paths(settings, base)
    _check(settings)
    return settings


# Relative paths in a settings file are relative to the file, not to the working directory.
PATH_KEYS = {
    "consul": ("token_file", "ca_file", "cert_file", "key_file"),
    "haproxy": ("runtime_dir", "template"),
    "ports": ("map_file",),
    "dirac_cs": ("file",),
    "certs": ("ca_dir", "ca_file", "client_cert", "client_key"),
}


def _resolve_paths(settings: Settings, base: Path | None) -> Settings:
    if base is None:
        return settings
    changes: dict[str, Any] = {}
    for section, keys in PATH_KEYS.items():
        current = getattr(settings, section)
        fixed = {
            key: str(base / getattr(current, key))
            for key in keys
            if hasattr(current, key)
            and getattr(current, key)
            and not Path(getattr(current, key)).is_absolute()
        }
        if fixed:
            changes[section] = dataclasses.replace(current, **fixed)
    return dataclasses.replace(settings, **changes) if changes else settings


def load_settings(path: str | None, env: Mapping[str, str] | None = None) -> Settings:
    """Load the TOML file at ``path`` (or ``$SIDECAR_CONFIG``, or the default path).

    A missing file at the *default* location gives the defaults; a missing file that was asked
    for explicitly is an error.
    """
    env = os.environ if env is None else env
    explicit = path or env.get("SIDECAR_CONFIG")
    chosen = explicit or DEFAULT_CONFIG
    try:
        with Path(chosen).open("rb") as handle:
            refuse_if_writable_by_others(handle.fileno(), chosen, "")
            raw = tomllib.load(handle)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(chosen, "", "file not found") from None
        raw = {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(chosen, "", f"not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(chosen, "", f"cannot read: {exc.strerror}") from None
    return parse_settings(raw, chosen, env, Path(chosen).resolve().parent)


def refuse_if_writable_by_others(fd: int, source: str, key: str) -> None:
    """A settings file or template anyone can write would let anyone reconfigure the gateway."""
    mode = os.fstat(fd).st_mode
    if mode & stat.S_IWOTH:
        raise ConfigError(source, key, f"refused: writable by others (mode {mode & 0o777:o})")


def read_token(settings: ConsulSettings) -> str:
    """The ACL token: ``token`` or the content of ``token_file`` (never logged)."""
    if settings.token:
        return settings.token
    if settings.token_file:
        try:
            return Path(settings.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                settings.token_file, "consul.token_file", exc.strerror or "unreadable"
            ) from None
    return ""

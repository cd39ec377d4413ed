"""What ``sidecar register`` registers: local DIRAC config -> Consul registrations (pure).

Sits outside the gateway's flow, on the service side: it produces the catalog entries the
gateway later reads. Text and plain mappings in, frozen values out; it reads no file, clock or
environment (the environment comes in as a mapping). ``sidecar.register.agent`` does the I/O.

What DIRAC itself reads (checked in DIRAC 9.1.22, ``Core/DISET/private/ServiceConfiguration``
and ``Core/Tornado/Server/HandlerManager``):
- v9: ``/Systems/<System>/Services/<Service>/Port``; v8: ``/Systems/<System>/<Instance>/
  Services/<Service>/Port`` with the instance from ``/DIRAC/Setups/<Setup>/<System>``.
- A service is a Tornado (``https``) one exactly when its ``Protocol`` option is ``https``
  (case-insensitive); anything else unset means ``dips``. Tornado services without their own
  ``Port`` listen on the Tornado server's port, ``/Systems/Tornado/Port`` (v8:
  ``/Systems/Tornado/<Instance>/Port``), default 8443. The ``Tornado`` name prefix is only a
  convention of DIRAC's templates, not what DIRAC decides on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from diraccfg import CFG

from sidecar.base import validate
from sidecar.base.errors import ConfigError
from sidecar.core.cfgtree import flatten_into as _flatten
from sidecar.core.cfgtree import setup_instances

TORNADO_DEFAULT_PORT = 8443
PROTOCOLS = ("dips", "https")
_NOMAD_PORT = re.compile(r"NOMAD_PORT_(.+)")
_MARATHON_PORT = re.compile(r"PORT_([0-9]{1,5})")


@dataclass(frozen=True, slots=True)
class DiracConfig:
    """A parsed DIRAC cfg: option path -> raw value, and every section path."""

    source: str
    options: Mapping[str, str]
    sections: frozenset[str]

    def get(self, path: str, default: str = "") -> str:
        return self.options.get(path, default).strip()


@dataclass(frozen=True, slots=True)
class LocalService:
    """One DIRAC service as the local config describes it."""

    system: str
    service: str
    protocol: str  # "dips" or "https"
    port: int  # where the service really listens (inside its container)
    section: str  # the cfg section it came from, for messages

    @property
    def path(self) -> str:
        return f"{self.system}/{self.service}"


@dataclass(frozen=True, slots=True)
class Registration:
    """One Consul agent registration, with the TTL check the register process feeds."""

    service: LocalService
    name: str  # Consul service name
    service_id: str
    address: str  # "" = the Consul node's address
    port: int  # the published (host) port
    tags: tuple[str, ...]
    meta: tuple[tuple[str, str], ...]

    @property
    def check_id(self) -> str:
        return f"{self.service_id}:tls"

    def payload(self, ttl: str, deregister_after: str) -> dict[str, Any]:
        """The JSON body of Consul's ``PUT /v1/agent/service/register``."""
        check: dict[str, Any] = {
            "CheckID": self.check_id,
            "Name": f"DIRAC {self.service.path} answers on port {self.service.port} (TLS)",
            "TTL": ttl,
            "Status": "critical",
            "Notes": "fed by sidecar register; critical until the first handshake",
        }
        if deregister_after:
            check["DeregisterCriticalServiceAfter"] = deregister_after
        body: dict[str, Any] = {
            "Name": self.name,
            "ID": self.service_id,
            "Port": self.port,
            "Tags": list(self.tags),
            "Meta": dict(self.meta),
            "Check": check,
        }
        if self.address:  # none: Consul takes the node's address
            body["Address"] = self.address
        return body


# --- reading the DIRAC config -------------------------------------------------------------


def parse_dirac_cfg(texts: Sequence[tuple[str, str]]) -> DiracConfig:
    """Parse and merge DIRAC cfg texts ``(source, text)`` in order (later files win, as with
    a comma-separated ``DIRACSYSCONFIG``). ``ConfigError`` names the file that fails."""
    if not texts:
        raise ConfigError("DIRACSYSCONFIG", "", "no DIRAC config file given")
    merged = CFG()
    for source, text in texts:
        try:
            cfg = CFG().loadFromBuffer(text)
        except Exception as exc:  # diraccfg raises ValueError, KeyError, ... on bad syntax
            raise ConfigError(source, "", f"not a valid DIRAC cfg: {exc}") from None
        merged = merged.mergeWith(cfg)
    options: dict[str, str] = {}
    sections: set[str] = set()
    _flatten(merged.getAsDict(), "", options, sections)
    return DiracConfig(",".join(s for s, _ in texts), options, frozenset(sections))


def _children(cfg: DiracConfig, parent: str) -> list[str]:
    depth = parent.count("/") + 1
    return sorted(
        s.rsplit("/", 1)[1]
        for s in cfg.sections
        if s.startswith(parent + "/") and s.count("/") == depth
    )


def detect_layout(cfg: DiracConfig, layout: str = "auto", setup: str = "") -> tuple[str, str]:
    """``(layout, setup)``: ``v9`` when any ``/Systems/<S>/Services`` section exists, else
    ``v8`` when a setup is known; ``ConfigError`` when neither fits."""
    if layout not in ("auto", "v8", "v9"):
        raise ConfigError(cfg.source, "layout", f"{layout!r}: must be auto, v8 or v9")
    setup = setup or cfg.get("/DIRAC/Setup")
    if layout == "v9" or (layout == "auto" and _v9_systems(cfg)):
        return "v9", ""
    if setup:
        if f"/DIRAC/Setups/{setup}" not in cfg.sections:
            raise ConfigError(cfg.source, f"/DIRAC/Setups/{setup}", "v8 layout: setup not defined")
        return "v8", setup
    if layout == "v8":
        raise ConfigError(cfg.source, "/DIRAC/Setup", "v8 layout: no setup given or configured")
    raise ConfigError(
        cfg.source,
        "/Systems",
        "unknown layout: no /Systems/<System>/Services section (v9) and no /DIRAC/Setup (v8)",
    )


def _v9_systems(cfg: DiracConfig) -> list[str]:
    return [s for s in _children(cfg, "/Systems") if f"/Systems/{s}/Services" in cfg.sections]


def _bases(cfg: DiracConfig, layout: str, setup: str) -> list[tuple[str, str]]:
    """``(system, base section)`` of every system, e.g. ``("Framework", "/Systems/Framework")``
    (v9) or ``("Framework", "/Systems/Framework/Production")`` (v8)."""
    if layout == "v9":
        return [(s, f"/Systems/{s}") for s in _v9_systems(cfg)]
    return [
        (system, f"/Systems/{system}/{instance}")
        for system, instance in setup_instances(cfg.options, setup)
        if f"/Systems/{system}/{instance}/Services" in cfg.sections
    ]


def _port(cfg: DiracConfig, option: str) -> int:
    raw = cfg.get(option)
    try:
        return validate.port(raw, "port")
    except ValueError as exc:
        raise ConfigError(cfg.source, option, str(exc)) from None


def _service(
    cfg: DiracConfig, system: str, base: str, name: str, tornado_port: str
) -> LocalService:
    section = f"{base}/Services/{name}"
    for what, value in (("system", system), ("service", name)):
        try:
            validate.dirac_name(value, what)
        except ValueError as exc:
            raise ConfigError(cfg.source, section, str(exc)) from None
    protocol = cfg.get(f"{section}/Protocol", "dips").lower() or "dips"
    if protocol not in PROTOCOLS:
        raise ConfigError(
            cfg.source,
            f"{section}/Protocol",
            f"{protocol!r}: the gateway passes only dips and https",
        )
    if f"{section}/Port" in cfg.options:
        port = _port(cfg, f"{section}/Port")
    elif protocol == "https":
        port = _port(cfg, tornado_port) if tornado_port in cfg.options else TORNADO_DEFAULT_PORT
    else:
        raise ConfigError(cfg.source, f"{section}/Port", "missing: a dips service needs its Port")
    return LocalService(system, name, protocol, port, section)


def find_services(
    cfg: DiracConfig, layout: str = "auto", setup: str = ""
) -> tuple[LocalService, ...]:
    """Every service under ``/Systems/*/Services`` (v9) or ``/Systems/*/<Instance>/Services``
    (v8), sorted by ``System/Service``. ``ConfigError`` on a bad entry or when none is found."""
    layout, setup = detect_layout(cfg, layout, setup)
    tornado = "/Systems/Tornado/Port"
    if layout == "v8":
        instance = cfg.get(f"/DIRAC/Setups/{setup}/Tornado")
        tornado = f"/Systems/Tornado/{instance}/Port" if instance else tornado
    found = [
        _service(cfg, system, base, name, tornado)
        for system, base in _bases(cfg, layout, setup)
        for name in _children(cfg, f"{base}/Services")
    ]
    if not found:
        where = (
            "/Systems/<System>/Services"
            if layout == "v9"
            else f"/Systems/<System>/<Instance>/Services (setup {setup})"
        )
        raise ConfigError(cfg.source, where, "no DIRAC service configured")
    return tuple(sorted(found, key=lambda s: s.path))


def select(
    services: Sequence[LocalService], wanted: Iterable[str], source: str
) -> tuple[LocalService, ...]:
    """The services named ``System/Service`` in ``wanted`` (all when empty)."""
    names = list(dict.fromkeys(wanted))
    if not names:
        return tuple(services)
    by_path = {s.path: s for s in services}
    missing = [n for n in names if n not in by_path]
    if missing:
        known = ", ".join(by_path) or "none"
        raise ConfigError(
            source,
            "--service",
            f"not in the DIRAC config: {', '.join(missing)} (configured: {known})",
        )
    return tuple(by_path[n] for n in sorted(names))


# --- ports, credentials, registrations ------------------------------------------------------


def _pair(text: str, what: str) -> tuple[str, str]:
    left, sep, right = text.partition("=")
    if not sep or not left.strip() or not right.strip():
        raise ConfigError(what, text, "expected LEFT=RIGHT")
    return left.strip(), right.strip()


def port_mapping(flags: Sequence[str], env: Mapping[str, str]) -> dict[int, int]:
    """Container port -> published host port. Sources, later ones winning: Nomad
    (``NOMAD_PORT_<label>`` inside, ``NOMAD_HOST_PORT_<label>`` outside), Marathon
    (``PORT_<container port>=<host port>``), then ``--port-map CONTAINER=HOST`` flags."""
    mapping: dict[int, int] = {}
    for key, value in sorted(env.items()):
        nomad = _NOMAD_PORT.fullmatch(key)
        if nomad and f"NOMAD_HOST_PORT_{nomad.group(1)}" in env:
            host = env[f"NOMAD_HOST_PORT_{nomad.group(1)}"]
            try:
                mapping[validate.port(value)] = validate.port(host)
            except ValueError as exc:
                raise ConfigError("environment", key, str(exc)) from None
    for key, value in sorted(env.items()):
        marathon = _MARATHON_PORT.fullmatch(key)
        if marathon:
            try:
                mapping[validate.port(marathon.group(1))] = validate.port(value)
            except ValueError as exc:
                raise ConfigError("environment", key, str(exc)) from None
    for flag in flags:
        inside, outside = _pair(flag, "--port-map")
        try:
            mapping[validate.port(inside)] = validate.port(outside)
        except ValueError as exc:
            raise ConfigError("--port-map", flag, str(exc)) from None
    return mapping


def public_ports(flags: Sequence[str]) -> dict[str, int]:
    """``--dirac-port System/Service=PORT`` flags -> {path: port} (the ``dirac_port`` meta)."""
    out: dict[str, int] = {}
    for flag in flags:
        path, port = _pair(flag, "--dirac-port")
        system, sep, service = path.partition("/")
        try:
            validate.dirac_name(system, "system")
            validate.dirac_name(service, "service")
            if not sep:
                raise ValueError("expected System/Service")
            out[path] = validate.port(port)
        except ValueError as exc:
            raise ConfigError("--dirac-port", flag, str(exc)) from None
    return out


def consul_name(service: LocalService) -> str:
    """The Consul service name: ``dirac-<system>-<service>``, lower-cased (DNS-friendly)."""
    return f"dirac-{service.system}-{service.service}".lower()


def plan(
    services: Sequence[LocalService],
    mapping: Mapping[int, int],
    address: str,
    tag: str,
    dirac_ports: Mapping[str, int] | None = None,
    instance: str = "",
) -> tuple[Registration, ...]:
    """One registration per service. ``instance`` (e.g. the host name) makes service IDs
    unique on the agent when several containers on one node run the same service."""
    if address:
        try:
            address = validate.host(address, "--address")
        except ValueError as exc:
            raise ConfigError("--address", address, str(exc)) from None
    dirac_ports = dirac_ports or {}
    unknown = sorted(set(dirac_ports) - {s.path for s in services})
    if unknown:
        raise ConfigError("--dirac-port", ", ".join(unknown), "not a registered service")
    out = []
    for svc in services:
        port = mapping.get(svc.port, svc.port)
        meta = {
            "dirac_system": svc.system,
            "dirac_service": svc.service,
            "dirac_protocol": svc.protocol,
        }
        if svc.path in dirac_ports:
            meta["dirac_port"] = str(dirac_ports[svc.path])
        name = consul_name(svc)
        where = re.sub(r"[^A-Za-z0-9_.-]", "-", instance or address or "node")
        out.append(
            Registration(
                service=svc,
                name=name,
                service_id=f"{name}-{where}-{port}",
                address=address,
                port=port,
                tags=(tag,),
                meta=tuple(sorted(meta.items())),
            )
        )
    published: dict[int, str] = {}
    for r in out:
        if r.port in published:
            raise ConfigError(
                "--port-map", "", f"{published[r.port]} and {r.service.path} on one port {r.port}"
            )
        published[r.port] = r.service.path
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Credentials:
    """Candidate paths, best first; the adapter takes the first that exists."""

    cert: tuple[str, ...]
    key: tuple[str, ...]
    ca_dir: tuple[str, ...]


def credential_candidates(
    cfg: DiracConfig, env: Mapping[str, str], root: str = "/opt/dirac"
) -> Credentials:
    """Where DIRAC looks for the host certificate, key and CA directory
    (``Core/Security/Locations``), in DIRAC's order."""
    grid = cfg.get("/DIRAC/Security/Grid-Security")
    dirs = [d for d in (grid, f"{root}/etc/grid-security") if d]

    def files(kind: str) -> tuple[str, ...]:
        found = [
            env.get(f"DIRAC_X509_HOST_{kind.upper()}", ""),
            cfg.get(f"/DIRAC/Security/{kind.capitalize()}File"),
        ]
        found += [
            f"{d}/{prefix}{kind}.pem"
            for prefix in ("server", "host", "dirac", "service")
            for d in dirs
        ]
        return tuple(f for f in found if f)

    cas = [
        f"{grid}/certificates" if grid else "",
        cfg.get("/DIRAC/Security/CALocation"),
        env.get("X509_CERT_DIR", ""),
    ]
    cas += [f"{root}/etc/grid-security/certificates", "/etc/grid-security/certificates"]
    return Credentials(files("cert"), files("key"), tuple(c for c in cas if c))

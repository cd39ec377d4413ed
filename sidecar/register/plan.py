"""What ``sidecar register`` registers: local DIRAC services -> Consul registrations (pure).

Sits outside the gateway's flow, on the service side: it produces the catalog entries the
gateway later reads. Text and plain mappings in, frozen values out; it reads no file, clock or
environment (the environment comes in as a mapping). The DIRAC cfg is read by
``register.localcfg``; ``register.agent`` does the I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.base import validate
from sidecar.base.errors import ConfigError
from sidecar.register.localcfg import DiracConfig, LocalService

_NOMAD_PORT = re.compile(r"NOMAD_PORT_(.+)")
_MARATHON_PORT = re.compile(r"PORT_([0-9]{1,5})")


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

"""The policy: catalog snapshot + settings -> the gateway's desired state (pure).

``desired_state`` is the one function that decides what the gateway exposes:

1. ``members``: every catalog value validated and admitted (``admission``), instances grouped
   into DIRAC services within ``[limits]``;
2. ``ports``: each service's public port by the contract's precedence, port ownership decided
   the same way on every gateway;
3. backends: one per exposed service (``candidates``: its agreement, port and claim, reused
   while nothing of it changed), its servers named after their instance
   (``server_name``: stable across reads, restarts and gateways), so that a membership change
   is a dynamic server added, removed or changed through the runtime API; plus one backend,
   bound and rejecting, for every *declared* service (port map, ``[ports.overrides]``) that is
   not in the catalog, so that a declared service appearing, or coming back after zero
   instances, never needs a reload.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

from sidecar.config.schema import Settings
from sidecar.core.admission import Perimeter, default_ranges
from sidecar.core.candidates import candidates, same_backend
from sidecar.core.members import group_members
from sidecar.core.model import Backend, DesiredState, Origin, Problem, Protocol, Snapshot
from sidecar.core.portmap import PortMap
from sidecar.core.ports import Claim, declared_owners, resolve, within_limit


def _kept_claims(
    previous: DesiredState | None, present: set[str]
) -> tuple[list[Claim], dict[str, Backend]]:
    """Services that left the catalog keep their port (rejecting at once) while known."""
    kept: dict[str, Backend] = {}
    if previous is not None:
        kept = {
            b.path: b
            for b in previous.backends
            if b.path not in present and b.origin is not Origin.DECLARED
        }
    claims = [Claim(b.path, b.public_port, "kept", b.claim_index, True) for b in kept.values()]
    return claims, kept


@functools.lru_cache(maxsize=16)  # settings and map change only on SIGHUP
def _declared_cached(
    overrides: tuple[tuple[str, int], ...], port_map: PortMap
) -> dict[str, tuple[int, Protocol, str]]:
    found = {
        f"{e.system}/{e.service}": (e.gateway_port, e.protocol, "map") for e in port_map.entries
    }
    for path, port in overrides:
        protocol = found[path][1] if path in found else Protocol.DIPS
        found[path] = (port, protocol, "config")
    return found


def _declared(settings: Settings, port_map: PortMap) -> dict[str, tuple[int, Protocol, str]]:
    """Every declared service: path -> (its declared port, protocol, "map" | "config")."""
    return _declared_cached(settings.ports.overrides, port_map)


def _declared_backends(
    declared: dict[str, tuple[int, Protocol, str]],
    exposed: dict[str, Backend],
    owners: dict[int, tuple[str, str]],
    blocked: Mapping[int, str],
) -> list[Backend]:
    """Frontends bound from the start: declared services that are not exposed otherwise, and
    the declared port of a service that moved to its ``dirac_port`` (both ports serve it)."""
    out: list[Backend] = []
    for path, (port, protocol, source) in sorted(declared.items()):
        if port in blocked or owners.get(port, (path,))[0] != path:
            continue  # unbindable, reserved, or an override gave the port to another service
        backend = exposed.get(path)
        if backend is not None:
            if backend.public_port != port:
                exposed[path] = dataclasses.replace(backend, extra_ports=(port,))
            continue
        out.append(_declared_backend(path, protocol, port, source))
    return out


@functools.lru_cache(maxsize=4096)  # the same value on every cycle: one object, compared fast
def _declared_backend(path: str, protocol: Protocol, port: int, source: str) -> Backend:
    system, service = path.split("/")
    return Backend(system, service, protocol, port, (), source, 0, Origin.DECLARED)


def desired_state(
    snapshot: Snapshot,
    settings: Settings,
    port_map: PortMap,
    previous: DesiredState | None = None,
    reserved_ports: frozenset[int] = frozenset(),
    unbindable: Mapping[int, str] | None = None,
    perimeter: Perimeter | None = None,
) -> DesiredState:
    """The whole policy. Deterministic: the same inputs give an equal value."""
    problems: list[Problem] = []
    perimeter = perimeter or permissive(settings, port_map)
    unbindable = dict(unbindable or {})
    groups = group_members(snapshot, settings, perimeter, problems)
    prev_backends = {b.path: b for b in previous.backends} if previous else {}
    asked, claims = candidates(groups, settings, port_map, prev_backends, problems)
    exposed = {claim.path: backend for backend, claim in zip(asked, claims, strict=True)}
    kept: dict[str, Backend] = {}
    if settings.gateway.keep_vanished_services:
        kept_claims, kept = _kept_claims(previous, set(exposed))
        claims += kept_claims
    owners = declared_owners(settings, port_map)
    winners = resolve(claims, owners, reserved_ports, unbindable, problems)
    winners = within_limit(winners, settings.limits.max_services, problems)
    chosen = {c.path for c in winners}
    exposed = {path: backend for path, backend in exposed.items() if path in chosen}
    for path, backend in sorted(kept.items()):
        if path in chosen:
            exposed[path] = dataclasses.replace(backend, servers=(), origin=Origin.KEPT)
            problems.append(Problem(path, "no longer in the catalog; port kept, rejecting"))
    blocked = {**unbindable, **{port: "reserved" for port in reserved_ports}}
    declared = _declared_backends(_declared(settings, port_map), exposed, owners, blocked)
    backends = sorted([*exposed.values(), *declared], key=lambda b: (b.public_port, b.path))
    # An unchanged backend is the previous object: the guard, the planner and the next cycle
    # compare it by identity instead of field by field (values are equal either way).
    backends = [same_backend(prev_backends.get(b.path), b) for b in backends]
    return DesiredState(tuple(backends), _capped(problems, settings.limits.max_problems))


def _capped(problems: list[Problem], limit: int) -> tuple[Problem, ...]:
    unique = sorted(set(problems))
    if len(unique) <= limit:
        return tuple(unique)
    more = Problem("problems", f"{len(unique) - limit} more not shown ([limits] max_problems)")
    return (*unique[:limit], more)


def permissive(settings: Settings, port_map: PortMap) -> Perimeter:
    """The perimeter of plain-data tests and ``render``: no network facts, the default ranges."""
    return perimeter_for(settings, port_map, frozenset(), frozenset(), ())


def perimeter_for(
    settings: Settings,
    port_map: PortMap,
    own_addresses: frozenset[str],
    refused: frozenset[tuple[str, int]],
    resolved: tuple[tuple[str, tuple[str, ...]], ...],
) -> Perimeter:
    """The perimeter from the settings and what the adapters found (pure)."""
    p = settings.ports
    declared = {e.gateway_port for e in port_map.entries} | {port for _, port in p.overrides}
    auto = (p.auto_low, p.auto_high) if p.auto_low else None
    ranges = p.ranges or default_ranges(declared, auto)
    return Perimeter(
        networks=settings.gateway.backend_networks,
        own_addresses=own_addresses,
        refused=refused,
        resolved=resolved,
        public_ranges=ranges,
        privileged=frozenset(port for port in declared if port < 1024),
    )

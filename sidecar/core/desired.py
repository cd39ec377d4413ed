"""The policy: catalog snapshot + settings -> the gateway's desired state (pure).

``desired_state`` is the one function that decides what the gateway exposes:

1. ``members``: every catalog value validated and admitted (``admission``), instances grouped
   into DIRAC services within ``[limits]``;
2. ``ports``: each service's public port by the contract's precedence, port ownership decided
   the same way on every gateway;
3. backends: one per exposed service, its servers named after their instance
   (``server_name``: stable across reads, restarts and gateways), so that a membership change
   is a dynamic server added, removed or changed through the runtime API; plus one backend,
   bound and rejecting, for every *declared* service (port map, ``[ports.overrides]``) that is
   not in the catalog, so that a declared service appearing, or coming back after zero
   instances, never needs a reload.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sidecar.config.schema import Settings
from sidecar.core.admission import Perimeter, default_ranges
from sidecar.core.members import Member, agree, group_members
from sidecar.core.model import Backend, DesiredState, Origin, Problem, Protocol, Server, Snapshot
from sidecar.core.portmap import PortMap
from sidecar.core.ports import Claim, declared_owners, own_port, resolve, within_limit

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}", re.ASCII)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A DIRAC service before port conflicts are resolved."""

    system: str
    service: str
    protocol: Protocol
    public_port: int
    port_source: str
    members: tuple[Member, ...]
    since: int = 0  # claim index of its port
    servers: tuple[Server, ...] = ()

    @property
    def path(self) -> str:
        return f"{self.system}/{self.service}"


@functools.lru_cache(maxsize=65536)  # the same instances come back on every cycle
def server_name(instance_key: str) -> str:
    """The HAProxy server name of an instance: readable, stable, and safe whatever the key.

    ``node1/sysadmin-1`` -> ``sysadmin-1-<8 hex digits of sha256(key)>``: the same instance
    gets the same name on every read and every gateway, so HAProxy keeps its state across a
    reload (server-state-file) and a change touches only the servers that changed. The service
    ID is shown only when it is already a plain word (never rewritten into one: catalog text
    outside the validated alphabets must not reach the config), else ``i``.
    """
    # ``node/service id``: the ID is everything after the first slash (an ID may hold slashes
    # itself: "/x" must not show as "x"; a node name with a slash makes the ID part non-plain)
    service_id = instance_key.partition("/")[2]
    readable = service_id if _PLAIN.fullmatch(service_id) else "i"
    digest = hashlib.sha256(instance_key.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{readable}-{digest}"


def servers_of(members: tuple[Member, ...]) -> tuple[Server, ...]:
    """Every usable member as a server, sorted by name (deterministic bytes)."""
    servers = [
        Server(server_name(m.key), m.address, m.port, m.state, m.key)
        for m in members
        if m.address  # members with no usable state only keep their service known
    ]
    return tuple(sorted(servers, key=lambda s: s.name))


@dataclass(frozen=True, slots=True)
class _Agreed:
    """What one service's instances come to (``agree`` and ``servers_of``)."""

    protocol: Protocol
    kept: tuple[Member, ...]
    problems: tuple[Problem, ...]
    servers: tuple[Server, ...]
    claimed: int | None  # the public port the instances claim (dirac_port), if any


# A change stream touches one service at a time: the others come back as the same Member
# objects (``members`` memoises them per catalog answer), so their agreement and servers are
# worked out once and reused while those objects are (keyed by identity: comparing values
# costs about as much as the work). A cycle at 1,000 x 5: 42-51 -> 35 ms. The memo holds the
# services of the last cycle only: one that left the catalog takes its members along.
_AGREED: dict[str, tuple[tuple[Member, ...], _Agreed]] = {}


def _agreed(path: str, members: list[Member]) -> tuple[tuple[Member, ...], _Agreed]:
    hit = _AGREED.get(path)
    same = hit is not None and len(hit[0]) == len(members)
    if hit is not None and same and all(a is b for a, b in zip(hit[0], members, strict=True)):
        return hit
    problems: list[Problem] = []
    protocol, kept = agree(path, members, problems)
    claimed = next((m.public_port for m in kept if m.public_port is not None), None)
    found = _Agreed(protocol, tuple(kept), tuple(problems), servers_of(tuple(kept)), claimed)
    return tuple(members), found


def _candidates(
    groups: dict[tuple[str, str], list[Member]],
    settings: Settings,
    port_map: PortMap,
    previous: dict[str, Backend],
    problems: list[Problem],
) -> tuple[list[Candidate], list[Claim]]:
    result: list[Candidate] = []
    claims: list[Claim] = []
    memo: dict[str, tuple[tuple[Member, ...], _Agreed]] = {}
    for (system, service), members in sorted(groups.items()):
        path = f"{system}/{service}"
        memo[path] = _agreed(path, members)
        agreed = memo[path][1]
        problems.extend(agreed.problems)
        kept = agreed.kept
        chosen = own_port(system, service, agreed.claimed, settings, port_map)
        if chosen is None:
            problems.append(Problem(path, "no public port: set dirac_port or [ports.overrides]"))
            continue
        port, source = chosen
        before = previous.get(path)
        held = before is not None and before.public_port == port
        if held and before is not None and before.claim_index:
            since = before.claim_index  # the claim it held: a newcomer cannot take it over
        else:
            relevant = [m for m in kept if source != "meta" or m.public_port == port] or kept
            since = min((m.created for m in relevant), default=0)
        result.append(
            Candidate(system, service, agreed.protocol, port, source, kept, since, agreed.servers)
        )
        claims.append(Claim(path, port, source, since, held))
    _AGREED.clear()
    _AGREED.update(memo)
    return result, claims


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
    candidates, claims = _candidates(groups, settings, port_map, prev_backends, problems)
    kept: dict[str, Backend] = {}
    if settings.gateway.keep_vanished_services:
        kept_claims, kept = _kept_claims(previous, {c.path for c in candidates})
        claims += kept_claims
    owners = declared_owners(settings, port_map)
    winners = resolve(claims, owners, reserved_ports, unbindable, problems)
    winners = within_limit(winners, settings.limits.max_services, problems)
    chosen = {c.path for c in winners}
    exposed = {
        c.path: Backend(
            c.system,
            c.service,
            c.protocol,
            c.public_port,
            c.servers,
            c.port_source,
            c.since,
        )
        for c in candidates
        if c.path in chosen
    }
    for path, backend in sorted(kept.items()):
        if path in chosen:
            exposed[path] = dataclasses.replace(backend, servers=(), origin=Origin.KEPT)
            problems.append(Problem(path, "no longer in the catalog; port kept, rejecting"))
    blocked = {**unbindable, **{port: "reserved" for port in reserved_ports}}
    declared = _declared_backends(_declared(settings, port_map), exposed, owners, blocked)
    backends = sorted([*exposed.values(), *declared], key=lambda b: (b.public_port, b.path))
    # An unchanged backend is the previous object: the guard, the planner and the next cycle
    # compare it by identity instead of field by field (values are equal either way).
    backends = [_same(prev_backends.get(b.path), b) for b in backends]
    return DesiredState(tuple(backends), _capped(problems, settings.limits.max_problems))


def _same(before: Backend | None, backend: Backend) -> Backend:
    return before if before is not None and before == backend else backend


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

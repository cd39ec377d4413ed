"""The policy: catalog snapshot + settings -> the gateway's desired state (pure).

``desired_state`` is the one function that decides what the gateway exposes. It validates
every catalog value, admits only backends inside the perimeter (``admission``), groups
instances into DIRAC services within the configured limits, gives each service its fixed
public port and resolves port ownership (``ports``), and keeps server slots stable: an instance
keeps the slot it had in ``previous`` so that membership changes touch as few HAProxy servers
as possible and can be applied through the runtime API without a reload.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass

from sidecar import validate
from sidecar.admission import Perimeter, backend_address, default_ranges, public_port
from sidecar.config.schema import Settings
from sidecar.model import (
    Backend,
    DesiredState,
    Health,
    Instance,
    Problem,
    Protocol,
    Server,
    ServerState,
    Snapshot,
)
from sidecar.portmap import PortMap
from sidecar.ports import Claim, declared_owners, own_port, resolve, within_limit

FREE_SLOT_ADDRESS = "127.0.0.1"
FREE_SLOT_PORT = 1


@dataclass(frozen=True, slots=True)
class Member:
    """A validated instance, ready to become a server."""

    key: str
    address: str
    port: int
    state: ServerState
    protocol: Protocol
    public_port: int | None
    created: int = 0  # Consul's CreateIndex of the registration


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

    @property
    def path(self) -> str:
        return f"{self.system}/{self.service}"


def _subject(inst: Instance) -> str:
    return f"consul service {inst.consul_service!r} instance {inst.key!r}"


def _state(health: Health, include_warning: bool) -> ServerState | None:
    if health is Health.PASSING or (health is Health.WARNING and include_warning):
        return ServerState.READY
    if health is Health.MAINTENANCE:
        return ServerState.DRAIN
    return None


@functools.lru_cache(maxsize=16384)  # catalogs repeat: the same registration, the same verdict
def validate_instance(inst: Instance) -> tuple[str, str, Member]:
    """Check one instance's metadata and address; raises ValueError with the reason.

    The member's state is READY here; the caller sets the real one from its health.
    """
    system = validate.dirac_name(inst.meta_value("dirac_system"), "dirac_system")
    service = validate.dirac_name(inst.meta_value("dirac_service"), "dirac_service")
    raw_protocol = inst.meta_value("dirac_protocol") or Protocol.DIPS.value
    try:
        protocol = Protocol(raw_protocol)
    except ValueError:
        raise ValueError(f"dirac_protocol {raw_protocol[:20]!r} is not dips or https") from None
    address = validate.host(inst.address, "address")
    port = validate.port(inst.port, "port")
    public = inst.meta_value("dirac_port")
    public_port = None if public is None else validate.port(public, "dirac_port")
    member = Member(
        inst.key, address, port, ServerState.READY, protocol, public_port, inst.create_index
    )
    return system, service, member


def _admit(member: Member, perimeter: Perimeter) -> Member:
    """The member with the address HAProxy may dial; ValueError when the perimeter refuses."""
    if member.public_port is not None:
        public_port(member.public_port, perimeter)
    if member.state is ServerState.MAINT:
        return member
    address = backend_address(member.address, member.port, perimeter)
    return member if address == member.address else dataclasses.replace(member, address=address)


def _group(
    snapshot: Snapshot, settings: Settings, perimeter: Perimeter, problems: list[Problem]
) -> dict[tuple[str, str], list[Member]]:
    groups: dict[tuple[str, str], list[Member]] = {}
    include_warning = settings.consul.include_warning
    for entries in sorted(snapshot.services, key=lambda e: e.name):
        problems.extend(entries.problems)
        if entries.error is not None:
            problems.append(Problem(f"consul service {entries.name!r}", entries.error))
            continue
        seen: set[str] = set()
        for inst in entries.instances:
            if inst.key in seen:
                problems.append(Problem(_subject(inst), "duplicate instance ID, ignored"))
                continue
            seen.add(inst.key)
            try:
                system, service, member = validate_instance(inst)
                state = _state(inst.health, include_warning)
                if state is None:
                    # Keep the service known (its port stays bound) with no usable instance.
                    member = dataclasses.replace(member, state=ServerState.MAINT)
                else:
                    member = dataclasses.replace(member, state=state)
                member = _admit(member, perimeter)
            except ValueError as exc:
                problems.append(Problem(_subject(inst), str(exc)))
                continue
            if member.state is ServerState.MAINT:
                member = dataclasses.replace(member, address="", port=0)
            groups.setdefault((system, service), []).append(member)
    return _bounded(groups, settings.limits.max_instances, problems)


def _bounded(
    groups: dict[tuple[str, str], list[Member]], limit: int, problems: list[Problem]
) -> dict[tuple[str, str], list[Member]]:
    """At most ``limit`` instances per service: the oldest registrations are kept."""
    for (system, service), members in groups.items():
        if len(members) > limit:
            members.sort(key=lambda m: (m.created, m.key))
            dropped = len(members) - limit
            del members[limit:]
            problems.append(
                Problem(
                    f"{system}/{service}",
                    f"[limits] max_instances = {limit} reached; {dropped} newer instances unused",
                )
            )
    return groups


def _first(members: list[Member]) -> Member:
    """The earliest registration (Consul's CreateIndex, then the key): its claims stand."""
    return min(members, key=lambda m: (m.created, m.key))


def _agree(
    path: str, members: list[Member], problems: list[Problem]
) -> tuple[Protocol, list[Member]]:
    """Instances of one DIRAC service must agree on protocol and claimed public port.

    The earliest registration decides (the same on every gateway, whatever order they saw the
    instances in): a later instance cannot move a running service to another port or protocol;
    one that disagrees is left out and reported.
    """
    first = _first(members)
    claimants = [m for m in members if m.public_port is not None]
    claim = _first(claimants).public_port if claimants else None
    kept: list[Member] = []
    for m in members:
        if m.protocol is not first.protocol:
            problems.append(
                Problem(
                    f"{path} instance {m.key!r}",
                    f"protocol {m.protocol.value} disagrees with {first.protocol.value} "
                    f"(of the first registration, {first.key!r})",
                )
            )
        elif m.public_port is not None and m.public_port != claim:
            problems.append(
                Problem(
                    f"{path} instance {m.key!r}",
                    f"dirac_port {m.public_port} disagrees with {claim} (of the first claim)",
                )
            )
        else:
            kept.append(m)
    return first.protocol, kept


def _candidates(
    groups: dict[tuple[str, str], list[Member]],
    settings: Settings,
    port_map: PortMap,
    previous: dict[str, Backend],
    problems: list[Problem],
) -> tuple[list[Candidate], list[Claim]]:
    result: list[Candidate] = []
    claims: list[Claim] = []
    for (system, service), members in sorted(groups.items()):
        path = f"{system}/{service}"
        protocol, kept = _agree(path, members, problems)
        claimed = next((m.public_port for m in kept if m.public_port is not None), None)
        chosen = own_port(system, service, claimed, settings, port_map)
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
        result.append(Candidate(system, service, protocol, port, source, tuple(kept), since))
        claims.append(Claim(path, port, source, since, held))
    return result, claims


def _kept_claims(
    previous: DesiredState | None, present: set[str]
) -> tuple[list[Claim], dict[str, Backend]]:
    """Services that left the catalog keep their port (rejecting at once) while known."""
    kept: dict[str, Backend] = {}
    if previous is not None:
        kept = {b.path: b for b in previous.backends if b.path not in present}
    claims = [Claim(b.path, b.public_port, "kept", b.claim_index, True) for b in kept.values()]
    return claims, kept


def _rejecting(backend: Backend) -> Backend:
    servers = tuple(
        Server(s.name, FREE_SLOT_ADDRESS, FREE_SLOT_PORT, ServerState.MAINT)
        for s in backend.servers
    )
    return dataclasses.replace(backend, servers=servers)


def _slot_count(previous: Backend | None, needed: int, min_slots: int) -> int:
    count = max(min_slots, len(previous.servers) if previous else 0)
    while count < needed:
        count *= 2
    return count


def assign_slots(
    members: tuple[Member, ...], previous: Backend | None, min_slots: int
) -> tuple[Server, ...]:
    """Slots ``s1..sN``: an instance keeps its previous slot, newcomers take the lowest free."""
    usable = sorted((m for m in members if m.state is not ServerState.MAINT), key=lambda m: m.key)
    count = _slot_count(previous, len(usable), min_slots)
    names = [f"s{i}" for i in range(1, count + 1)]
    old = {s.instance: s.name for s in previous.servers if s.instance} if previous else {}
    slots: dict[str, Member] = {}
    newcomers: list[Member] = []
    for member in usable:
        name = old.get(member.key)
        if name is not None and name in names and name not in slots:
            slots[name] = member
        else:
            newcomers.append(member)
    free = (name for name in names if name not in slots)
    for member in newcomers:
        slots[next(free)] = member
    servers: list[Server] = []
    for name in names:
        m = slots.get(name)
        if m is None:
            servers.append(Server(name, FREE_SLOT_ADDRESS, FREE_SLOT_PORT, ServerState.MAINT))
        else:
            servers.append(Server(name, m.address, m.port, m.state, m.key))
    return tuple(servers)


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
    groups = _group(snapshot, settings, perimeter, problems)
    prev_backends = {b.path: b for b in previous.backends} if previous else {}
    candidates, claims = _candidates(groups, settings, port_map, prev_backends, problems)
    kept: dict[str, Backend] = {}
    if settings.gateway.keep_vanished_services:
        kept_claims, kept = _kept_claims(previous, {c.path for c in candidates})
        claims += kept_claims
    owners = declared_owners(settings, port_map)
    winners = resolve(claims, owners, reserved_ports, dict(unbindable or {}), problems)
    winners = within_limit(winners, settings.limits.max_services, problems)
    chosen = {c.path for c in winners}
    backends = [
        Backend(
            c.system,
            c.service,
            c.protocol,
            c.public_port,
            assign_slots(c.members, prev_backends.get(c.path), settings.haproxy.min_slots),
            c.port_source,
            c.since,
        )
        for c in candidates
        if c.path in chosen
    ]
    for path, backend in sorted(kept.items()):
        if path in chosen:
            backends.append(_rejecting(backend))
            problems.append(Problem(path, "no longer in the catalog; port kept, rejecting"))
    backends.sort(key=lambda b: (b.public_port, b.path))
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

"""The policy: catalog snapshot + settings -> the gateway's desired state (pure).

``desired_state`` is the one function that decides what the gateway exposes. It validates
every catalog value, groups instances into DIRAC services, gives each service its fixed public
port, resolves port conflicts deterministically and keeps server slots stable: an instance keeps
the slot it had in ``previous`` so that membership changes touch as few HAProxy servers as
possible and can be applied through the runtime API without a reload.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from sidecar import validate
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
from sidecar.portmap import PortMap, hashed_port

# Where a public port came from. For one service the contract's precedence is config >
# dirac_port (meta) > map > auto; when two services claim one port, the port's owner is decided
# in this order (strongest first): the operator's config, the shipped map, a claim, a hash.
PORT_SOURCES = ("config", "map", "meta", "auto")
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


def _group(
    snapshot: Snapshot, settings: Settings, problems: list[Problem]
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
            except ValueError as exc:
                problems.append(Problem(_subject(inst), str(exc)))
                continue
            groups.setdefault((system, service), [])
            state = _state(inst.health, include_warning)
            if state is not None:
                groups[(system, service)].append(dataclasses.replace(member, state=state))
            else:
                # Keep the service known (its port stays bound) even with no usable instance.
                groups[(system, service)].append(
                    dataclasses.replace(member, address="", port=0, state=ServerState.MAINT)
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


def _public_port(
    system: str, service: str, members: list[Member], settings: Settings, port_map: PortMap
) -> tuple[int, str] | None:
    path = f"{system}/{service}"
    overrides = dict(settings.ports.overrides)
    if path in overrides:
        return overrides[path], "config"
    claimed = [m.public_port for m in members if m.public_port is not None]
    if claimed:  # _agree left only instances that agree with the first claim
        return claimed[0], "meta"
    entry = port_map.lookup(system, service)
    if entry is not None:
        return entry.gateway_port, "map"
    if settings.ports.auto_low:
        return hashed_port(
            system, service, settings.ports.auto_low, settings.ports.auto_high
        ), "auto"
    return None


def _candidates(
    groups: dict[tuple[str, str], list[Member]],
    settings: Settings,
    port_map: PortMap,
    problems: list[Problem],
) -> list[Candidate]:
    result: list[Candidate] = []
    for (system, service), members in sorted(groups.items()):
        path = f"{system}/{service}"
        protocol, kept = _agree(path, members, problems)
        chosen = _public_port(system, service, kept, settings, port_map)
        if chosen is None:
            problems.append(Problem(path, "no public port: set dirac_port or [ports.overrides]"))
            continue
        result.append(Candidate(system, service, protocol, chosen[0], chosen[1], tuple(kept)))
    return result


def _resolve_conflicts(
    candidates: list[Candidate],
    reserved: set[int],
    problems: list[Problem],
    busy: frozenset[int] = frozenset(),
) -> list[Candidate]:
    """One service per public port: the strongest port source wins, then the sorted name."""
    by_port: dict[int, list[Candidate]] = {}
    for cand in candidates:
        by_port.setdefault(cand.public_port, []).append(cand)
    winners: list[Candidate] = []
    for port, claims in sorted(by_port.items()):
        if port in busy:
            for cand in claims:
                problems.append(
                    Problem(cand.path, f"public port {port} is in use by another process")
                )
            continue
        if port in reserved:
            for cand in claims:
                problems.append(
                    Problem(cand.path, f"public port {port} is reserved by the gateway")
                )
            continue
        claims.sort(key=lambda c: (PORT_SOURCES.index(c.port_source), c.path))
        winner, losers = claims[0], claims[1:]
        winners.append(winner)
        for loser in losers:
            problems.append(
                Problem(
                    loser.path,
                    f"public port {port} ({loser.port_source}) is taken by {winner.path} "
                    f"({winner.port_source}); service not exposed",
                )
            )
    return winners


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


def _vanished(
    previous: DesiredState | None, present: set[str], taken: set[int], problems: list[Problem]
) -> list[Backend]:
    """Services that left the catalog keep their port (rejecting at once) while known."""
    kept: list[Backend] = []
    if previous is None:
        return kept
    for backend in previous.backends:
        if backend.path in present or backend.public_port in taken:
            continue
        servers = tuple(
            Server(s.name, FREE_SLOT_ADDRESS, FREE_SLOT_PORT, ServerState.MAINT)
            for s in backend.servers
        )
        kept.append(
            Backend(
                backend.system,
                backend.service,
                backend.protocol,
                backend.public_port,
                servers,
                backend.port_source,
            )
        )
        problems.append(Problem(backend.path, "no longer in the catalog; port kept, rejecting"))
    return kept


def desired_state(
    snapshot: Snapshot,
    settings: Settings,
    port_map: PortMap,
    previous: DesiredState | None = None,
    reserved_ports: frozenset[int] = frozenset(),
    busy_ports: frozenset[int] = frozenset(),
) -> DesiredState:
    """The whole policy. Deterministic: the same inputs give an equal value."""
    problems: list[Problem] = []
    groups = _group(snapshot, settings, problems)
    candidates = _candidates(groups, settings, port_map, problems)
    winners = _resolve_conflicts(candidates, set(reserved_ports), problems, busy_ports)
    prev_backends = {b.path: b for b in previous.backends} if previous else {}
    backends = [
        Backend(
            c.system,
            c.service,
            c.protocol,
            c.public_port,
            assign_slots(c.members, prev_backends.get(c.path), settings.haproxy.min_slots),
            c.port_source,
        )
        for c in winners
    ]
    if settings.gateway.keep_vanished_services:
        present = {c.path for c in candidates}
        taken = {c.public_port for c in winners} | set(reserved_ports)
        backends.extend(_vanished(previous, present, taken, problems))
    backends.sort(key=lambda b: (b.public_port, b.path))
    return DesiredState(tuple(backends), tuple(sorted(set(problems))))

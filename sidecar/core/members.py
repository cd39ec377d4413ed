"""Members: catalog instances -> validated, admitted instances grouped by DIRAC service (pure).

The first step of the policy (``desired`` calls it): every catalog value is validated
(``validate``), every backend address is admitted or refused (``admission``), instances of one
DIRAC service must agree with its first registration, and no service holds more than
``[limits] max_instances``. Everything refused becomes a ``Problem``, nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sidecar.base import validate
from sidecar.config.schema import Settings
from sidecar.core.admission import Perimeter, backend_address, public_port
from sidecar.core.model import (
    Health,
    Instance,
    Problem,
    Protocol,
    ServerState,
    ServiceEntries,
    Snapshot,
)


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


def _subject(inst: Instance) -> str:
    return f"consul service {inst.consul_service!r} instance {inst.key!r}"


def _state(health: Health, include_warning: bool) -> ServerState | None:
    if health is Health.PASSING or (health is Health.WARNING and include_warning):
        return ServerState.READY
    if health is Health.MAINTENANCE:
        return ServerState.DRAIN
    return None


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


# One answer's usable members by DIRAC service, in the order first seen: kept by the memo
# below for every answer, so one tuple per service rather than one (system, service, member)
# triple per instance (0.3 MB at 1,000 x 5).
Found = tuple[tuple[tuple[str, str], tuple[Member, ...]], ...]


def _entries_members(
    entries: ServiceEntries, include_warning: bool, perimeter: Perimeter
) -> tuple[Found, tuple[Problem, ...]]:
    """One health answer -> its usable members by (system, service), and its problems."""
    problems: list[Problem] = list(entries.problems)
    if entries.error is not None:
        problems.append(Problem(f"consul service {entries.name!r}", entries.error))
        return (), tuple(problems)
    found: dict[tuple[str, str], list[Member]] = {}
    seen: set[str] = set()
    for inst in entries.instances:
        if inst.key in seen:
            problems.append(Problem(_subject(inst), "duplicate instance ID, ignored"))
            continue
        seen.add(inst.key)
        try:
            system, service, member = validate_instance(inst)
            state = _state(inst.health, include_warning)
            # a member with no usable state keeps its service known (its port stays bound)
            member = dataclasses.replace(member, state=state or ServerState.MAINT)
            member = _admit(member, perimeter)
        except ValueError as exc:
            problems.append(Problem(_subject(inst), str(exc)))
            continue
        if member.state is ServerState.MAINT:
            member = dataclasses.replace(member, address="", port=0)
        found.setdefault((system, service), []).append(member)
    return tuple((path, tuple(members)) for path, members in found.items()), tuple(problems)


# Catalog reads repeat: the watcher hands on the same ServiceEntries object for every service
# that did not change, so its members are worked out once (keyed by identity: hashing a
# whole answer would cost about as much as the work itself). The memo holds the answers of
# the last snapshot only: an answer that was replaced or left goes, with its instances and
# whatever they carry (before, up to 20,000 answers stayed, and a cache of validated
# instances kept 16,384 more: a catalog churning instances with large metadata could fill
# the gateway's memory with registrations long gone). Nothing below is cached per value.
_MEMO: dict[int, tuple[ServiceEntries, bool, Perimeter, object]] = {}


def _memo_members(
    entries: ServiceEntries,
    include_warning: bool,
    perimeter: Perimeter,
    kept: dict[int, tuple[ServiceEntries, bool, Perimeter, object]],
) -> tuple[Found, tuple[Problem, ...]]:
    hit = _MEMO.get(id(entries))
    if (
        hit is not None
        and hit[0] is entries
        and hit[1] is include_warning
        and (hit[2] is perimeter or hit[2] == perimeter)
    ):
        kept[id(entries)] = hit
        return hit[3]  # type: ignore[return-value]
    result = _entries_members(entries, include_warning, perimeter)
    kept[id(entries)] = (entries, include_warning, perimeter, result)
    return result


def group_members(
    snapshot: Snapshot, settings: Settings, perimeter: Perimeter, problems: list[Problem]
) -> dict[tuple[str, str], list[Member]]:
    groups: dict[tuple[str, str], list[Member]] = {}
    include_warning = settings.consul.include_warning
    kept: dict[int, tuple[ServiceEntries, bool, Perimeter, object]] = {}
    for entries in sorted(snapshot.services, key=lambda e: e.name):
        found, found_problems = _memo_members(entries, include_warning, perimeter, kept)
        problems.extend(found_problems)
        for path, members in found:
            groups.setdefault(path, []).extend(members)
    _MEMO.clear()
    _MEMO.update(kept)
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


def agree(
    path: str, members: list[Member], problems: list[Problem], default: int | None = None
) -> tuple[Protocol, list[Member], int | None]:
    """Instances of one DIRAC service must agree on protocol and claimed public port.

    The earliest registration decides (the same on every gateway, whatever order they saw the
    instances in): a later instance cannot move a running service to another port or protocol;
    one that disagrees is left out and reported. A first registration that names no
    ``dirac_port`` stands for the service's ``default`` port (the port map's or the hashed
    one): a later instance naming another port would otherwise move the service, and every
    client's URL with it. Returns (protocol, the instances kept, the port they claim: None
    when it is the default).
    """
    first = _first(members)
    claimants = [m for m in members if m.public_port is not None]
    if first.public_port is not None or default is None:
        claim = _first(claimants).public_port if claimants else None
        claimed, whose = claim, "of the first claim"
    else:
        claim, claimed = default, None
        whose = f"the service's port: its first registration, {first.key!r}, names none"
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
                    f"dirac_port {m.public_port} disagrees with {claim} ({whose})",
                )
            )
        else:
            kept.append(m)
    return first.protocol, kept, claimed

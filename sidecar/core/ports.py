"""Public ports: which port each DIRAC service gets, and who owns a port two services claim
(pure; part of the policy stage, called by ``desired``).

One service's port follows the contract's precedence: ``[ports.overrides]`` > its
``dirac_port`` > the port map > a port hashed from its name. Ownership of a port is a separate
question, answered the same on every gateway:

1. a port named by ``[ports.overrides]`` belongs to that service, one named by the port map to
   its map service: it is never handed to anyone else, even while its owner is absent;
2. any other port belongs to the service that serves it in the applied state, as long as that
   service is known (even re-registering an old instance with a new ``dirac_port`` cannot take
   it over); among newcomers, to the claim Consul created first (``CreateIndex``), whatever
   order a gateway saw them in; then the sorted name;
3. a port that cannot be bound (another process holds it, no permission, ...) or that the
   gateway reserves for itself goes to nobody.

Every loser is reported; the rest of the gateway is unaffected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sidecar.config.schema import Settings
from sidecar.core.model import Problem
from sidecar.core.portmap import PortMap, hashed_port

# Where a service's own port came from, in the contract's precedence for one service.
PORT_SOURCES = ("config", "meta", "map", "auto", "kept")
DECLARED = ("config", "map")


@dataclass(frozen=True, slots=True)
class Claim:
    """A service asking for a public port."""

    path: str
    port: int
    source: str  # one of PORT_SOURCES
    since: int  # claim index: Consul's CreateIndex of the claim, or the remembered one
    held: bool = False  # it serves this port in the applied state


def declared_owners(settings: Settings, port_map: PortMap) -> dict[int, tuple[str, str]]:
    """Port -> (owner "System/Service", "config" | "map") for every declared port."""
    owners = {e.gateway_port: (f"{e.system}/{e.service}", "map") for e in port_map.entries}
    for path, port in settings.ports.overrides:  # the operator's word beats the shipped map
        owners[port] = (path, "config")
    return owners


# own_port runs for every service on every cycle: building the overrides' dict in each call
# made a cycle quadratic in their number (1,000 services with an override each: 115 ms a
# cycle, 65 of them here, most of the daemon's CPU under a change stream). One dict per
# overrides value (it changes only on SIGHUP), found by identity: hashing the tuple to look
# it up would cost as much as building the dict.
_OVERRIDES: list[tuple[tuple[tuple[str, int], ...], Mapping[str, int]]] = []


def _overrides(pairs: tuple[tuple[str, int], ...]) -> Mapping[str, int]:
    memo = _OVERRIDES[0] if _OVERRIDES else None
    if memo is not None and memo[0] is pairs:
        return memo[1]
    found = dict(pairs)
    _OVERRIDES[:] = [(pairs, found)]  # holds ``pairs``: its id cannot be reused meanwhile
    return found


def own_port(
    system: str, service: str, claimed: int | None, settings: Settings, port_map: PortMap
) -> tuple[int, str] | None:
    """One service's port by the contract's precedence; None when it has none."""
    path = f"{system}/{service}"
    overrides = _overrides(settings.ports.overrides)
    if path in overrides:
        return overrides[path], "config"
    if claimed is not None:
        return claimed, "meta"
    entry = port_map.lookup(system, service)
    if entry is not None:
        return entry.gateway_port, "map"
    if settings.ports.auto_low:
        low, high = settings.ports.auto_low, settings.ports.auto_high
        return hashed_port(system, service, low, high), "auto"
    return None


def _refused(claims: list[Claim], reason: str, problems: list[Problem]) -> None:
    problems.extend(Problem(c.path, reason) for c in claims)


def resolve(
    claims: list[Claim],
    owners: dict[int, tuple[str, str]],
    reserved: frozenset[int],
    unbindable: dict[int, str],
    problems: list[Problem],
) -> list[Claim]:
    """One service per public port, by the ownership rules of the module docstring."""
    by_port: dict[int, list[Claim]] = {}
    for claim in claims:
        by_port.setdefault(claim.port, []).append(claim)
    winners: list[Claim] = []
    for port, group in sorted(by_port.items()):
        if len(group) == 1 and port not in unbindable and port not in reserved:
            owner = owners.get(port)
            if owner is None or owner[0] == group[0].path:
                winners.append(group[0])  # the common case, ~1,000 times a cycle: no contest
                continue
        if port in unbindable:
            _refused(group, f"public port {port} cannot be bound: {unbindable[port]}", problems)
            continue
        if port in reserved:
            _refused(group, f"public port {port} is reserved by the gateway", problems)
            continue
        owner = owners.get(port)
        if owner is not None:
            mine = [c for c in group if c.path == owner[0]]
            others = [c for c in group if c.path != owner[0]]
            winners.extend(mine[:1])
            _refused(others, f"public port {port} belongs to {owner[0]} ({owner[1]})", problems)
            continue
        group.sort(key=lambda c: (not c.held, c.since, c.path))
        winner, losers = group[0], group[1:]
        winners.append(winner)
        for loser in losers:
            # The held rule can keep a younger claim (its watch answered first here): a
            # gateway that saw the two the other way round, or starts afresh, serves the
            # older one. Say so, since the fleet may disagree on this port until one leaves.
            why = "which claimed it first"
            if winner.held and 0 < loser.since < winner.since:
                why = (f"which this gateway served first although {loser.path}'s claim is older "
                       "(another gateway may serve it instead)")  # fmt: skip
            problems.append(
                Problem(
                    loser.path,
                    f"public port {port} ({loser.source}) is taken by {winner.path}, "
                    f"{why}; service not exposed",
                )
            )
    return winners


def within_limit(winners: list[Claim], limit: int, problems: list[Problem]) -> list[Claim]:
    """At most ``limit`` services: declared ones first, then the oldest claims."""
    if len(winners) <= limit:
        return winners
    ranked = sorted(winners, key=lambda c: (c.source not in DECLARED, c.since, c.path))
    for claim in ranked[limit:]:
        problems.append(
            Problem(claim.path, f"[limits] max_services = {limit} reached; service not exposed")
        )
    return ranked[:limit]

"""One DIRAC service's backend before port conflicts are resolved (pure; part of the policy
stage, called by ``desired``): its instances' agreement (``members.agree``), its servers and
their names, its public port (``ports.own_port``) and its claim on it.

A change stream touches one service at a time, so each step is remembered per service and
reused while its inputs are the objects of the last cycle (identity, not equality: comparing
values costs about as much as the work). At 1,000 x 5 a cycle went 42-51 -> 35 ms with the
agreement remembered and 40 -> 21 ms with the backend and claim (1,000 overrides).
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass

from sidecar.config.schema import Settings
from sidecar.core.members import Member, agree
from sidecar.core.model import Backend, Problem, Protocol, Server
from sidecar.core.portmap import PortMap
from sidecar.core.ports import Claim, own_port

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}", re.ASCII)


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
    # interned: the certificate report names every server again (health.certjob)
    return sys.intern(f"{readable}-{digest}")


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
_AGREED: dict[str, tuple[tuple[Member, ...], _Agreed, Settings, PortMap]] = {}


def _agreed(
    path: str, members: list[Member], settings: Settings, port_map: PortMap
) -> tuple[tuple[Member, ...], _Agreed, Settings, PortMap]:
    hit = _AGREED.get(path)
    same = (
        hit is not None
        and len(hit[0]) == len(members)
        and hit[2] is settings
        and hit[3] is port_map
    )
    if hit is not None and same and all(a is b for a, b in zip(hit[0], members, strict=True)):
        return hit
    problems: list[Problem] = []
    default = None
    if any(m.public_port is not None for m in members):  # only then can it matter (rare)
        default = default_port(path, settings, port_map)
    protocol, kept, claimed = agree(path, members, problems, default)
    found = _Agreed(protocol, tuple(kept), tuple(problems), servers_of(tuple(kept)), claimed)
    return tuple(members), found, settings, port_map


def default_port(path: str, settings: Settings, port_map: PortMap) -> int | None:
    """The port a service has when its first registration names none (the map's or the
    hashed one); None under ``[ports.overrides]`` (the operator's port stands whatever the
    instances say) and for a service with no port of its own."""
    system, service = path.split("/")
    chosen = own_port(system, service, None, settings, port_map)
    return chosen[0] if chosen is not None and chosen[1] in ("map", "auto") else None


# The same for what follows from the agreement: a service whose agreement, previous backend,
# settings and port map are the objects of the last cycle gets the same backend and claim
# objects (a cycle at 1,000 x 5 built and compared 1,000 of each for one changed service).
_CHOSEN: dict[str, tuple[_Agreed, Backend | None, Settings, PortMap, Backend, Claim]] = {}


def _candidate(
    path: str,
    agreed: _Agreed,
    settings: Settings,
    port_map: PortMap,
    before: Backend | None,
    problems: list[Problem],
) -> tuple[Backend, Claim] | None:
    """The backend a service asks for (before port conflicts are resolved) and its claim."""
    hit = _CHOSEN.get(path)
    if (
        hit is not None
        and hit[0] is agreed
        and hit[1] is before
        and hit[2] is settings
        and hit[3] is port_map
    ):
        return hit[4], hit[5]
    system, service = path.split("/")
    chosen = own_port(system, service, agreed.claimed, settings, port_map)
    if chosen is None:
        problems.append(Problem(path, "no public port: set dirac_port or [ports.overrides]"))
        return None
    port, source = chosen
    held = before is not None and before.public_port == port
    if held and before is not None and before.claim_index:
        since = before.claim_index  # the claim it held: a newcomer cannot take it over
    else:
        kept = agreed.kept
        relevant = [m for m in kept if source != "meta" or m.public_port == port] or kept
        since = min((m.created for m in relevant), default=0)
    built = Backend(system, service, agreed.protocol, port, agreed.servers, source, since)
    backend = same_backend(before, built)  # the previous object when nothing changed
    claim = Claim(path, port, source, since, held)
    _CHOSEN[path] = (agreed, before, settings, port_map, backend, claim)
    return backend, claim


def candidates(
    groups: dict[tuple[str, str], list[Member]],
    settings: Settings,
    port_map: PortMap,
    previous: dict[str, Backend],
    problems: list[Problem],
) -> tuple[list[Backend], list[Claim]]:
    """Every service's backend and claim, in path order (claims[i] is backends[i]'s)."""
    result: list[Backend] = []
    claims: list[Claim] = []
    memo: dict[str, tuple[tuple[Member, ...], _Agreed, Settings, PortMap]] = {}
    for (system, service), members in sorted(groups.items()):
        path = f"{system}/{service}"
        memo[path] = _agreed(path, members, settings, port_map)
        agreed = memo[path][1]
        problems.extend(agreed.problems)
        found = _candidate(path, agreed, settings, port_map, previous.get(path), problems)
        if found is not None:
            result.append(found[0])
            claims.append(found[1])
    _AGREED.clear()
    _AGREED.update(memo)
    for gone in _CHOSEN.keys() - memo.keys():  # services that left take their entry along
        del _CHOSEN[gone]
    return result, claims



def same_backend(before: Backend | None, backend: Backend) -> Backend:
    """``before`` when it equals ``backend``: unchanged backends stay the previous objects, so
    the guard, the planner and the next cycle compare them by identity."""
    if before is backend:
        return backend
    return before if before is not None and before == backend else backend

"""Plan: what it takes to go from the applied state to the target (pure).

Fixed public ports make the HAProxy frontends static, so most catalog changes only move server
slots. The planner compares the *skeleton* of both configs (the config rendered with every slot
empty): when the skeletons are equal, the change is pure membership and goes through the
runtime API; anything else (a service or port appears or goes, slots run out, the template or
settings changed) needs a reload. Identical bytes need nothing at all.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from sidecar import validate
from sidecar.model import Backend, DesiredState, Server, ServerState


class PlanKind(StrEnum):
    NONE = "none"
    RUNTIME = "runtime"  # runtime API commands, then the file is rewritten without a reload
    RELOAD = "reload"  # validate, write, hitless master-worker reload
    START = "start"  # HAProxy is not running: validate, write, start it


@dataclass(frozen=True, slots=True)
class Rendered:
    """A desired state with the config it renders to and that config's skeleton."""

    desired: DesiredState | None
    config: str
    skeleton: str | None
    held: tuple[str, ...] = ()  # instances the blast-radius guard kept in rotation
    shape: DesiredState | None = None  # skeleton(desired), to reuse ``skeleton`` text
    inputs_key: int = 0  # which inputs (settings, template) rendered it


@dataclass(frozen=True, slots=True)
class Plan:
    kind: PlanKind
    commands: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()  # human-readable, for the one INFO line per apply
    reason: str = ""


class NeedsReload(Exception):  # noqa: N818 - a signal inside the planner, not an error
    """A server change the runtime API cannot express (e.g. a DNS name as address)."""


def skeleton(desired: DesiredState) -> DesiredState:
    """The same services and slots with every slot empty: equal skeletons -> runtime change."""
    free = ServerState.MAINT
    return DesiredState(
        tuple(
            replace(b, servers=tuple(Server(s.name, "127.0.0.1", 1, free) for s in b.servers))
            for b in desired.backends
        ),
        (),
    )


def _weight(server: Server) -> int:
    return 0 if server.state is ServerState.DRAIN else server.weight


def server_commands(backend: str, old: Server, new: Server) -> list[str]:
    """Runtime API commands that turn slot ``old`` into ``new`` (both of backend ``backend``)."""
    target = f"bk_{backend}/{new.name}"
    if new.state is ServerState.MAINT:
        return [] if old.state is ServerState.MAINT else [f"set server {target} state maint"]
    commands: list[str] = []
    if (old.address, old.port) != (new.address, new.port):
        if not validate.is_ip(new.address):
            raise NeedsReload(f"{target}: {new.address} is a DNS name")
        commands.append(f"set server {target} addr {new.address} port {new.port}")
    if _weight(old) != _weight(new) or old.state is ServerState.MAINT:
        commands.append(f"set weight {target} {_weight(new)}")
    if old.state is not new.state:
        # "state ready" also clears a drain or maintenance set by hand; drain itself is
        # expressed as weight 0 so that the config file can say the same thing.
        commands.append(f"set server {target} state ready")
    return commands


def backend_commands(old: Backend, new: Backend) -> list[str]:
    old_servers = {s.name: s for s in old.servers}
    commands: list[str] = []
    for server in new.servers:
        previous = old_servers.get(server.name)
        if previous is None:
            raise NeedsReload(f"bk_{new.name}/{server.name} does not exist yet")
        commands.extend(server_commands(new.name, previous, server))
    return commands


def describe(old: DesiredState | None, new: DesiredState) -> tuple[str, ...]:
    """One short phrase per changed service or server, for the apply log line."""
    before = {b.path: b for b in old.backends} if old else {}
    after = {b.path: b for b in new.backends}
    changes = [f"+service {p}:{after[p].public_port}" for p in sorted(after.keys() - before.keys())]
    changes += [
        f"-service {p}:{before[p].public_port}" for p in sorted(before.keys() - after.keys())
    ]
    for path in sorted(after.keys() & before.keys()):
        if before[path].public_port != after[path].public_port:
            changes.append(f"port {path} {before[path].public_port}->{after[path].public_port}")
        old_servers = {s.name: s for s in before[path].servers}
        for s in after[path].servers:
            o = old_servers.get(s.name)
            if o is None or (o.address, o.port, o.state) != (s.address, s.port, s.state):
                where = f"{s.address}:{s.port}" if s.state is not ServerState.MAINT else "empty"
                changes.append(f"{path}/{s.name}={where}({s.state.value})")
    return tuple(changes)


def plan(applied: Rendered | None, target: Rendered, running: bool) -> Plan:
    """Decide how to apply ``target`` given what HAProxy runs (``applied``)."""
    assert target.desired is not None
    old_desired = applied.desired if applied else None
    changes = describe(old_desired, target.desired)
    if not running:
        return Plan(PlanKind.START, changes=changes, reason="haproxy is not running")
    if applied is None:
        return Plan(PlanKind.RELOAD, changes=changes, reason="no applied state known")
    if applied.config == target.config:
        return Plan(PlanKind.NONE)
    if applied.skeleton is None or applied.desired is None or applied.skeleton != target.skeleton:
        return Plan(PlanKind.RELOAD, changes=changes, reason="structure changed")
    try:
        commands = runtime_commands(applied.desired, target.desired)
    except NeedsReload as exc:
        return Plan(PlanKind.RELOAD, changes=changes, reason=str(exc))
    return Plan(PlanKind.RUNTIME, tuple(commands), changes, "membership only")


def runtime_commands(old: DesiredState, new: DesiredState) -> list[str]:
    """Commands for every backend of ``new``; raises NeedsReload when one cannot be expressed."""
    before = {b.name: b for b in old.backends}
    commands: list[str] = []
    for backend in new.backends:
        previous = before.get(backend.name)
        if previous is None:
            raise NeedsReload(f"bk_{backend.name} does not exist yet")
        commands.extend(backend_commands(previous, backend))
    return commands

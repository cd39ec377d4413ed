"""Plan: what it takes to go from the applied state to the target (pure).

Fixed public ports make the HAProxy frontends static, and every declared service has its
frontend and backend from the start, so most catalog changes are only servers: added, removed
or changed through HAProxy's runtime API (dynamic servers, ``add server`` / ``del server``).
The planner compares the *structure* of both states (the frontends and backends, the settings
and the template): equal structures -> runtime commands; anything else (an undeclared service
or port appears or goes, a setting or the template changed) -> a reload. Identical bytes need
nothing at all.

A removed server is first put in maintenance (no new connections; running ones finish), then
deleted once it has no connection left; until then it is *retired*: it exists in HAProxy but
not in the config, and an instance that comes back under its name revives it instead of adding
a second one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from sidecar.base import validate
from sidecar.core.model import Backend, DesiredState, Server

Structure = tuple[object, ...]
ServerKey = tuple[str, str]  # (backend name as HAProxy knows it, server name)


class PlanKind(StrEnum):
    NONE = "none"
    RUNTIME = "runtime"  # runtime API commands, then the file is rewritten without a reload
    RELOAD = "reload"  # validate, write, hitless master-worker reload
    START = "start"  # HAProxy is not running: validate, write, start it


@dataclass(frozen=True, slots=True)
class Rendered:
    """A desired state with its structure and, once rendered, its config.

    The runtime path never needs the config text: the servers are compared as values and the
    file is rendered afterwards, off the path of the change (``pipeline.with_config``).
    """

    desired: DesiredState | None
    config: str | None
    structure: Structure | None  # None: unknown (the next change reloads)
    held: tuple[str, ...] = ()  # instances the blast-radius guard kept in rotation

    def textless(self) -> Rendered:
        """Itself without the config text, as the daemon keeps what is applied: HAProxy's
        file holds the text (0.8 MB at 1,000 x 5), plans compare desired states and
        structures, the status keeps the text's hash. A state known from the file alone (at
        start: no desired state) keeps its text, since then the bytes decide."""
        if self.desired is None or self.config is None:
            return self
        return replace(self, config=None)


@dataclass(frozen=True, slots=True)
class Plan:
    kind: PlanKind
    commands: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()  # human-readable, for the one INFO line per apply
    reason: str = ""
    retire: tuple[ServerKey, ...] = ()  # servers to delete once they have no connection
    revived: tuple[ServerKey, ...] = ()  # retired servers brought back by ``commands``


def backend_id(backend: Backend) -> str:
    """The HAProxy name of a backend (also in the template context, the drift check...)."""
    return f"bk_{backend.name}"


def structure(desired: DesiredState, inputs_key: object) -> Structure:
    """What only a reload can change: every frontend, every backend, the inputs' identity."""
    shape = tuple((b.name, b.protocol.value, b.ports) for b in desired.backends)
    return (inputs_key, shape)


def describe(old: DesiredState | None, new: DesiredState) -> tuple[str, ...]:
    """One short phrase per changed service or server, for the apply log line."""
    before = {b.path: b for b in old.backends} if old else {}
    after = {b.path: b for b in new.backends}
    changes = [f"+service {p}:{after[p].public_port}" for p in sorted(after.keys() - before.keys())]
    changes += [
        f"-service {p}:{before[p].public_port}" for p in sorted(before.keys() - after.keys())
    ]
    for path in sorted(after.keys() & before.keys()):
        if before[path] == after[path]:
            continue  # most backends of a stream's cycle (often the same object)
        if before[path].ports != after[path].ports:
            changes.append(f"port {path} {before[path].ports}->{after[path].ports}")
        old_servers = {s.name: s for s in before[path].servers}
        new_servers = {s.name: s for s in after[path].servers}
        for name in sorted(new_servers.keys() - old_servers.keys()):
            s = new_servers[name]
            changes.append(f"+{path}/{name}={validate.hostport(s.address, s.port)}({s.state})")
        for name in sorted(old_servers.keys() - new_servers.keys()):
            changes.append(f"-{path}/{name}")
        for name in sorted(new_servers.keys() & old_servers.keys()):
            o, s = old_servers[name], new_servers[name]
            if (o.address, o.port, o.effective_weight) != (s.address, s.port, s.effective_weight):
                changes.append(f"~{path}/{name}={validate.hostport(s.address, s.port)}({s.state})")
    return tuple(changes)


def runtime_added(target: str, server: Server, options: str) -> list[str]:
    """Commands that create server ``target`` (``bk/name``) as a reload would."""
    weight = server.effective_weight
    extra = f" weight {weight}" if weight != 1 else ""
    address = validate.hostport(server.address, server.port)
    return [
        f"add server {target} {address} {options}{extra}".rstrip(),
        f"enable health {target}",
        f"set server {target} state ready",
    ]


def runtime_changed(target: str, old: Server | None, new: Server) -> list[str]:
    """Commands that bring server ``old`` (None: a retired one, in maintenance) to ``new``."""
    commands: list[str] = []
    if old is None or (old.address, old.port) != (new.address, new.port):
        commands.append(f"set server {target} addr {new.address} port {new.port}")
    if old is None or old.effective_weight != new.effective_weight:
        commands.append(f"set weight {target} {new.effective_weight}")
    if old is None:
        commands.append(f"set server {target} state ready")
    return commands


def backend_commands(
    old: Backend, new: Backend, options: str, retired: frozenset[ServerKey]
) -> tuple[list[str], list[ServerKey], list[ServerKey]]:
    """(commands, servers to retire, retired servers revived) for one backend."""
    bk = backend_id(new)
    before = {s.name: s for s in old.servers}
    commands: list[str] = []
    revived: list[ServerKey] = []
    for server in new.servers:  # additions first: a replacement serves before the old goes
        target = f"{bk}/{server.name}"
        previous = before.get(server.name)
        if previous is None and (bk, server.name) in retired:
            commands += runtime_changed(target, None, server)
            revived.append((bk, server.name))
        elif previous is None:
            commands += runtime_added(target, server, options)
        else:
            commands += runtime_changed(target, previous, server)
    gone = sorted(before.keys() - {s.name for s in new.servers})
    commands += [f"set server {bk}/{name} state maint" for name in gone]
    return commands, [(bk, name) for name in gone], revived


def plan(
    applied: Rendered | None,
    target: Rendered,
    running: bool,
    options: str = "",
    retired: frozenset[ServerKey] = frozenset(),
) -> Plan:
    """Decide how to apply ``target`` given what HAProxy runs (``applied``).

    ``options`` are the server options of the rendered config (``core.render
    .server_options``): a dynamic server gets exactly what a reload would give it.
    """
    assert target.desired is not None
    old_desired = applied.desired if applied else None
    unchanged = (
        applied is not None
        and applied.desired is not None
        and applied.structure is not None
        and applied.structure == target.structure
        and applied.desired.backends == target.desired.backends
    )
    if unchanged:  # the common case in a stream: answer before describing anything
        if running:
            return Plan(PlanKind.NONE)
        return Plan(PlanKind.START, reason="haproxy is not running")
    changes = describe(old_desired, target.desired)
    if not running:
        return Plan(PlanKind.START, changes=changes, reason="haproxy is not running")
    if applied is None:
        return Plan(PlanKind.RELOAD, changes=changes, reason="no applied state known")
    if applied.desired is None:  # only the file is known: the bytes decide
        if target.config is not None and applied.config == target.config:
            return Plan(PlanKind.NONE)
        return Plan(PlanKind.RELOAD, changes=changes, reason="no applied state known")
    same = applied.structure is not None and applied.structure == target.structure
    if same and applied.desired.backends == target.desired.backends:
        return Plan(PlanKind.NONE)
    if not same:
        return Plan(PlanKind.RELOAD, changes=changes, reason="structure changed")
    before = {b.name: b for b in applied.desired.backends}
    commands: list[str] = []
    retire: list[ServerKey] = []
    revived: list[ServerKey] = []
    for backend in target.desired.backends:
        old = before[backend.name]
        if old.servers == backend.servers:
            continue  # no command for it: every server is there, unchanged
        more, gone, back = backend_commands(old, backend, options, retired)
        commands += more
        retire += gone
        revived += back
    return Plan(
        PlanKind.RUNTIME,
        tuple(commands),
        changes,
        "servers only",
        tuple(retire),
        tuple(revived),
    )

"""Drift repair (pure): what HAProxy really runs vs the applied desired state.

A manual ``disable server``, a worker that crashed and came back from an older state file, an
operator's ``add server`` or reload can leave HAProxy's servers different from what the sidecar
applied. The daemon periodically reads ``show backend`` and ``show servers state`` and repairs
the difference through the runtime API: a missing server is added, an extra one retired (put in
maintenance, deleted once idle), a changed one set back. Only when backends themselves are
missing (another config was loaded) is a reload needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.core.answers import ActualServer
from sidecar.core.model import DesiredState, Server, ServerState
from sidecar.core.plan import ServerKey, backend_id, runtime_added, runtime_changed


@dataclass(frozen=True, slots=True)
class Drift:
    commands: tuple[str, ...]
    differences: tuple[str, ...]  # human-readable, for the log
    needs_reload: str = ""  # non-empty: the runtime API cannot repair this
    retire: tuple[ServerKey, ...] = ()  # extra servers, now in maintenance, to delete


def _same(actual: Server, wanted: Server) -> bool:
    return (actual.address, actual.port, actual.state is ServerState.MAINT, actual.weight) == (
        wanted.address,
        wanted.port,
        False,
        wanted.effective_weight,
    )


def find_drift(
    actual: tuple[ActualServer, ...],
    desired: DesiredState,
    backends: frozenset[str],
    options: str,
    retired: frozenset[ServerKey] = frozenset(),
) -> Drift:
    """``actual``: ``show servers state``; ``backends``: the names ``show backend`` lists."""
    missing = sorted({backend_id(b) for b in desired.backends} - backends)
    if missing:
        return Drift((), (f"backend {missing[0]} missing",), "backends missing in HAProxy")
    running = {(a.backend, a.server.name): a.server for a in actual}
    commands: list[str] = []
    differences: list[str] = []
    wanted: set[ServerKey] = set()
    for backend in desired.backends:
        bk = backend_id(backend)
        for server in backend.servers:
            key = (bk, server.name)
            wanted.add(key)
            have = running.get(key)
            target = f"{bk}/{server.name}"
            if have is None:
                differences.append(f"{target} missing")
                commands += runtime_added(target, server, options)
            elif not _same(have, server):
                differences.append(
                    f"{target}: {have.address}:{have.port} {have.state.value} w{have.weight} -> "
                    f"{server.address}:{server.port} w{server.effective_weight}"
                )
                commands += runtime_changed(target, None, server)
    retire: list[ServerKey] = []
    for key in sorted(running.keys() - wanted):
        if key[0] not in {backend_id(b) for b in desired.backends}:
            continue  # a backend the sidecar does not manage (an operator's own)
        if key not in retired or running[key].state is not ServerState.MAINT:
            differences.append(f"{key[0]}/{key[1]} not wanted")
            commands.append(f"set server {key[0]}/{key[1]} state maint")
        retire.append(key)
    return Drift(tuple(commands), tuple(differences), retire=tuple(retire))

"""Drift repair (pure): what HAProxy really runs vs the applied desired state.

A manual ``disable server``, a worker that crashed and came back from an older state file, or
an operator's reload can leave HAProxy's servers different from what the sidecar applied. The
daemon periodically reads ``show servers state`` and repairs the difference through the
runtime API; when the servers themselves are missing (another config was loaded) it asks for a
reload instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar import validate
from sidecar.model import DesiredState, Server, ServerState
from sidecar.plan import NeedsReload, server_commands
from sidecar.runtime_state import ActualServer


@dataclass(frozen=True, slots=True)
class Drift:
    commands: tuple[str, ...]
    differences: tuple[str, ...]  # human-readable, for the log
    needs_reload: str = ""  # non-empty: the runtime API cannot repair this


def _same(actual: Server, wanted: Server) -> bool:
    if wanted.state is ServerState.MAINT:
        return actual.state is ServerState.MAINT  # a free slot's address does not matter
    weight = 0 if wanted.state is ServerState.DRAIN else wanted.weight
    return (actual.address, actual.port, actual.state, actual.weight) == (
        wanted.address,
        wanted.port,
        wanted.state,
        weight,
    )


def find_drift(actual: tuple[ActualServer, ...], desired: DesiredState) -> Drift:
    running = {(a.backend, a.server.name): a.server for a in actual}
    commands: list[str] = []
    differences: list[str] = []
    for backend in desired.backends:
        for wanted in backend.servers:
            key = (f"bk_{backend.name}", wanted.name)
            have = running.get(key)
            if have is None:
                return Drift((), (f"{key[0]}/{key[1]} missing",), "servers missing in HAProxy")
            if _same(have, wanted) or not validate.is_ip(wanted.address or "127.0.0.1"):
                continue  # HAProxy shows the address it resolved a host name to: not drift
            differences.append(
                f"{key[0]}/{wanted.name}: {have.address}:{have.port} {have.state.value} "
                f"w{have.weight} -> {wanted.address}:{wanted.port} {wanted.state.value}"
            )
            try:
                commands.extend(server_commands(backend.name, have, wanted))
            except NeedsReload as exc:
                return Drift((), tuple(differences), str(exc))
    return Drift(tuple(commands), tuple(differences))

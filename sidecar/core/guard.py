"""Blast-radius guard (pure): never empty a backend on one suspicious catalog read.

When a Consul glitch marks many instances critical at once (an agent losing its serf checks,
a flapping network), following the catalog blindly would take a whole DIRAC service out. The
guard lets at most ``max_share`` of a backend's ready servers go on one read; the rest stay
in rotation until the removal is confirmed: an instance that was deregistered (absent from the
catalog) is confirmed at once, one that is registered but failing is confirmed when a second,
independent read says the same (the daemon performs it and passes the confirmed keys in).
HAProxy's own TCP checks still take a really dead server out within seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from sidecar.core.model import Backend, DesiredState, Problem, ServerState, Snapshot


@dataclass(frozen=True, slots=True)
class Guarded:
    desired: DesiredState
    held: tuple[str, ...]  # instance keys kept in rotation pending confirmation


class _Registered:
    """The keys of every instance in the snapshot, worked out on the first question: a cycle
    in which no backend lost a ready server (every addition) never builds the set."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._keys: set[str] | None = None

    def __contains__(self, key: str) -> bool:
        if self._keys is None:
            entries = self._snapshot.services
            self._keys = {inst.key for one in entries for inst in one.instances}
        return key in self._keys


def _guard_backend(
    old: Backend,
    new: Backend,
    registered: _Registered,
    confirmed: frozenset[str],
    max_share: float,
    held_before: frozenset[str],
    distrust_absent: bool,
) -> tuple[Backend, list[str]]:
    if old.servers == new.servers:
        return new, []  # nothing left (the common case: most backends did not change)
    was_ready = {s.instance: s for s in old.servers if s.state is ServerState.READY and s.instance}
    now_ready = {s.instance for s in new.servers if s.instance}
    lost = sorted(set(was_ready) - now_ready)
    # Just after Consul's index went backwards (data wiped, catalog being rebuilt) an absent
    # instance proves nothing: all of them stay until the grace period ends or they return.
    keep = [k for k in lost if k not in registered] if distrust_absent else []
    lost = [k for k in lost if k not in keep]
    suspicious = [k for k in lost if k in registered and k not in confirmed]
    # Held once, held until confirmed: the share is not spent again on every later read.
    keep += [k for k in suspicious if k in held_before]
    fresh = [k for k in lost if k not in held_before]
    allowed = math.floor(len(was_ready) * max_share)
    if len(fresh) > allowed:
        fresh_suspicious = [k for k in fresh if k in suspicious]
        keep += fresh_suspicious[: len(fresh) - allowed]
    if not keep:
        return new, []
    servers = {s.name: s for s in new.servers}
    held: list[str] = []
    for key in sorted(keep):
        previous = was_ready[key]
        if previous.name in servers:
            continue  # its name now belongs to a current instance: nothing to hold back
        servers[previous.name] = previous
        held.append(key)
    ordered = tuple(servers[name] for name in sorted(servers))
    return replace(new, servers=ordered), held


def blast_guard(
    previous: DesiredState | None,
    new: DesiredState,
    snapshot: Snapshot,
    max_share: float,
    confirmed: frozenset[str] = frozenset(),
    held_before: frozenset[str] = frozenset(),
    distrust_absent: bool = False,
) -> Guarded:
    """``new`` with suspicious mass removals held back; ``max_share`` >= 1 disables the guard."""
    if previous is None or max_share >= 1.0:
        return Guarded(new, ())
    before = {b.path: b for b in previous.backends}
    registered = _Registered(snapshot)
    backends: list[Backend] = []
    held: list[str] = []
    for backend in new.backends:
        old = before.get(backend.path)
        if old is None or old.servers == backend.servers:
            backends.append(backend)  # nothing to hold back (most backends of a cycle)
            continue
        guarded, kept = _guard_backend(
            old, backend, registered, confirmed, max_share, held_before, distrust_absent
        )
        backends.append(guarded)
        held.extend(kept)
    problems = list(new.problems) + [
        Problem(f"instance {key!r}", "removal held back by the blast-radius guard until confirmed")
        for key in held
    ]
    return Guarded(
        replace(new, backends=tuple(backends), problems=tuple(sorted(problems))), tuple(held)
    )

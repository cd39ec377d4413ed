"""Which public ports HAProxy cannot bind, and when to try them again (pure; clock passed in).

A frontend that cannot be bound (another process holds the port: EADDRINUSE; no permission
for a port below 1024: EACCES; an address that is not local: EADDRNOTAVAIL) must cost only its
own service, never the whole gateway's ability to change. Ports are learnt two ways: the
daemon's preflight bind of every new port (it knows EADDRINUSE and EADDRNOTAVAIL for sure),
and HAProxy's own alerts after a reload failed on a port the preflight could not judge (the
daemon may lack a capability that HAProxy has, so EACCES is only believed from HAProxy). Each
entry is retried after a while: the other process may have gone, a capability been granted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PREFLIGHT_RETRY = 30.0  # seconds before a port the preflight found busy is probed again
RELOAD_RETRY = 600.0  # seconds before a port a reload failed on is tried again (a failed
# reload pauses every listener for a moment: do not try it often)


@dataclass(slots=True)
class BindMemo:
    # port -> (why, when to try again, whether a cheap probe may re-check it on any cycle)
    entries: dict[int, tuple[str, float, bool]] = field(default_factory=dict)

    def learn(
        self, found: Mapping[int, str], now: float, retry: float, probe: bool = False
    ) -> bool:
        """Record ``found`` (port -> reason); whether anything new was learnt.

        ``probe``: found by the preflight, which may look again on every cycle (a bind test
        costs microseconds); otherwise only HAProxy can tell, at ``now + retry``.
        """
        changed = False
        for port, reason in found.items():
            changed |= port not in self.entries or self.entries[port][0] != reason
            self.entries[port] = (reason, now + retry, probe)
        return changed

    def expire(self, now: float) -> list[int]:
        """Forget the entries to look at again now (probe entries always, the others when their
        time has come); returns their ports."""
        due = sorted(p for p, (_, at, probe) in self.entries.items() if probe or at <= now)
        for port in due:
            del self.entries[port]
        return due

    def forget(self, ports: Iterable[int]) -> None:
        for port in ports:
            self.entries.pop(port, None)

    def next_retry(self) -> float | None:
        return min((at for _, at, _ in self.entries.values()), default=None)

    def as_inputs(self) -> tuple[tuple[int, str], ...]:
        """For ``pipeline.Inputs.unbindable``: sorted, hashable."""
        return tuple(sorted((port, why) for port, (why, _, _) in self.entries.items()))

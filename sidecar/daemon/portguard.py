"""Public ports HAProxy cannot bind, kept out of the config so that they cost only their own
service (adapter glue over the pure ``core.bindmemo``).

Two ways to learn a port: the preflight bind of every port a reload would add (EADDRINUSE and
EADDRNOTAVAIL for sure), and HAProxy's own alerts after a reload failed (the only judge of a
permission: its capabilities are not the daemon's). Each answer is the set of ports to leave
out (``unbindable``, for ``pipeline.Inputs``) and when to look again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from sidecar.core.bindmemo import PREFLIGHT_RETRY, RELOAD_RETRY, BindMemo
from sidecar.haproxy.binds import unbindable_ports

log = logging.getLogger(__name__)
Unbindable = tuple[tuple[int, str], ...]
Probe = Callable[[str, Iterable[int]], dict[int, str]]  # address, ports -> port: reason


@dataclass(frozen=True, slots=True)
class Verdict:
    unbindable: Unbindable  # the ports to leave out now
    retry_at: float | None  # when one of them may be tried again


class PortGuard:
    def __init__(self, probe: Probe = unbindable_ports) -> None:
        self.memo = BindMemo()
        self._probe = probe  # a fake in unit tests

    @property
    def active(self) -> bool:
        """Ports are left out: every cycle looks at them again (a probe costs microseconds)."""
        return bool(self.memo.entries)

    def preflight(
        self, bind: str, applied: Iterable[int], target: Iterable[int], now: float
    ) -> Verdict:
        """The ports the target adds (plus those whose retry time has come), bind-tested."""
        retry = set(self.memo.expire(now))
        new = (set(target) | retry) - set(applied)
        found = self._probe(bind, sorted(new)) if new else {}
        self.memo.learn(found, now, PREFLIGHT_RETRY, probe=True)
        return Verdict(self.memo.as_inputs(), self.memo.next_retry())

    def reload_failed(self, found: Mapping[int, str], now: float) -> bool:
        """HAProxy's own bind alerts after a failed reload; whether anything new was learnt.

        A port in use or an address that is not local the preflight can look at again; a
        permission only HAProxy can tell, so it is not tried before ``RELOAD_RETRY``."""
        probe = {p: why for p, why in found.items() if "ermission" not in why}
        learnt = self.memo.learn(probe, now, PREFLIGHT_RETRY, probe=True)
        denied = {p: why for p, why in found.items() if p not in probe}
        learnt = self.memo.learn(denied, now, RELOAD_RETRY) or learnt
        if found and learnt:
            log.error(
                "haproxy cannot bind %s: leaving those services out and trying again at once",
                ", ".join(f"{port} ({why})" for port, why in sorted(found.items())),
            )
        return bool(found) and learnt

    def unbindable(self) -> Unbindable:
        return self.memo.as_inputs()

"""HAProxy's frontends during a drain: their load and pausing them (adapter, socket I/O).

``loads`` reads ``show stat`` of the frontends (``show stat -1 1 -1``) from the current worker
(admin socket) and from every old worker (master CLI, ``@!<pid>``): old workers of earlier
reloads still carry connections of their own, and a drain is only over when they end too.
``apply`` sends the ``disable frontend`` / ``enable frontend`` commands ``core.drain``
decided, to the current worker only (old workers no longer accept). Parsing is pure
(``core.drain.parse_frontends``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.base.errors import HAProxyError
from sidecar.core.drain import FrontendLoad, gateway_frontends, parse_frontends
from sidecar.haproxy.process import HAProxy
from sidecar.haproxy.sockets import send_command

SHOW_FRONTENDS = "show stat -1 1 -1"  # type 1: frontends only


@dataclass(frozen=True, slots=True)
class Load:
    current: tuple[FrontendLoad, ...]  # the current worker's frontends
    old_sessions: int  # connections still open on old workers

    @property
    def connections(self) -> int:
        return sum(f.sessions for f in gateway_frontends(self.current)) + self.old_sessions

    @property
    def paused(self) -> int:
        return sum(1 for f in gateway_frontends(self.current) if f.status == "PAUSED")


def load(haproxy: HAProxy, timeout: float = 2.0) -> Load | None:
    """The frontends of every worker; None when the current worker does not answer."""
    try:
        current = parse_frontends(send_command(haproxy.admin_socket, SHOW_FRONTENDS, timeout))
    except HAProxyError:
        return None
    info = haproxy.proc(timeout=timeout, attempts=1)
    old = 0
    for pid in info.old_workers if info else ():
        try:
            answer = send_command(haproxy.master_socket, f"@!{pid} {SHOW_FRONTENDS}", timeout)
        except HAProxyError:
            continue  # it ended meanwhile
        old += sum(f.sessions for f in gateway_frontends(parse_frontends(answer)))
    return Load(current, old)


def apply(haproxy: HAProxy, commands: tuple[str, ...]) -> list[str]:
    """Send the commands to the current worker; the answers that report an error."""
    if not commands:
        return []
    return haproxy.runtime(commands)

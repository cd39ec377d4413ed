"""The daemon's side of ``sidecar drain``: read the state, pause or resume HAProxy's
frontends, tell the fleet (adapter wiring; the decisions are ``core.drain``'s).

Called from the status round (every ``HEARTBEAT`` seconds, in its own thread): polling the
small state file there costs one ``stat``/``read`` every two seconds and works whoever wrote
it (``sidecar drain`` as root, from another container sharing the runtime directory, or
before the daemon started). While the drain is ``closed`` every round re-checks the
frontends: a reload starts a worker whose frontends accept again, the next round pauses them.
The first round after a start resumes frontends a drain paused before an ``undrain`` that
happened while the daemon was down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.core.drain import DrainState, Phase, frontend_commands, phase, status_record
from sidecar.haproxy import frontends
from sidecar.haproxy.process import HAProxy
from sidecar.host.drainfile import read_drain

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DrainView:
    """What one round found: for the fleet (``reason``) and the status record."""

    reason: str | None = None  # None: serving; else drained, with this reason
    record: dict[str, Any] = field(default_factory=dict)

    def published(self, maintenance: bool) -> dict[str, Any]:
        """The status record's ``drain`` part, once the fleet round said whether the
        registration is in maintenance."""
        return {**self.record, "maintenance": maintenance} if self.record else {}


class DrainControl:
    def __init__(self, runtime_dir: Path) -> None:
        self._dir = runtime_dir
        self._last: tuple[DrainState | None, Phase] | None = None
        self._last_error = ""
        self._settled = False  # frontends known to match the phase (serving only)

    def tick(self, haproxy: HAProxy, now: float) -> DrainView:
        """One round: the state file, then the frontends; never raises."""
        state, error = read_drain(self._dir)
        if error and error != self._last_error:
            log.error("drain state ignored (serving): %s", error)
        self._last_error = error
        wanted = phase(state, now)
        if (state, wanted) != self._last:
            self._log_change(state, wanted)
            self._last, self._settled = (state, wanted), False
        paused, connections = 0, None
        # Serving: one look at the frontends after each change (an undrain), then none.
        if wanted is not Phase.SERVING or not self._settled:
            paused, connections = self._enforce(haproxy, wanted)
        if state is None:
            return DrainView(None, {})
        record = status_record(state, now, False, paused, connections)
        return DrainView(state.reason, record)

    def _enforce(self, haproxy: HAProxy, wanted: Phase) -> tuple[int, int | None]:
        current = frontends.load(haproxy)
        if current is None:
            return 0, None  # HAProxy not answering: the next round tries again
        commands = frontend_commands(wanted, current.current)
        errors = frontends.apply(haproxy, commands)
        if commands:
            log.info("drain: %s", "; ".join(commands[:10]) + (" ..." if len(commands) > 10 else ""))
        if errors:
            log.warning("drain: HAProxy refused: %s", "; ".join(errors[:3]))
        self._settled = not errors
        paused = current.paused
        if wanted is Phase.CLOSED:
            paused += len(commands) - len(errors)
        else:
            paused -= len(commands) - len(errors)
        return max(0, paused), current.connections

    @staticmethod
    def _log_change(state: DrainState | None, wanted: Phase) -> None:
        if state is None:
            log.info("drain: serving (not drained)")
        elif wanted is Phase.GRACE:
            log.info("drain: out of the CS and DNS; new connections served for %.0fs more",
                     max(0.0, state.grace))  # fmt: skip
        else:
            log.info("drain: frontends paused, open connections finishing")

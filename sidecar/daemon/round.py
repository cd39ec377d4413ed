"""The status round: status file, metrics, sd_notify, drain and the fleet, in its own thread
(adapter glue; a mixin of ``daemon.loop.Daemon``).

Every ``HEARTBEAT`` seconds and soon after an apply (at most one round per ``BEAT_GAP``, or
further apart when rounds are costly: ``core.schedule.round_gap``). A round costs milliseconds
to tens of milliseconds (Consul round trips, a CS write): in the main loop it would delay the
next catalog change, so it never runs there.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from sidecar.core.plan import Rendered
from sidecar.core.schedule import round_gap
from sidecar.daemon.wiring import Parts
from sidecar.fleet.member import Beat
from sidecar.health.status import Status, write_status

log = logging.getLogger(__name__)
HEARTBEAT = 2.0  # seconds between status/metrics/notify rounds while nothing happens
WATCHDOG_STALE = 10.0  # no WATCHDOG=1 once the main loop has not turned for this long


class StatusRound:
    """What the round reads of the daemon; ``Daemon`` provides all of it."""

    parts: Parts
    status: Status
    applied: Rendered | None
    beat: threading.Event  # set after an apply: a round soon
    round_lock: threading.Lock  # the round vs SIGHUP (fleet, settings)
    alive_at: float  # the main loop's last turn (monotonic)
    applied_index: int

    def status_rounds(self, stopping: threading.Event) -> None:
        cost = 0.0
        while not stopping.is_set():
            self.beat.wait(HEARTBEAT)
            # applies in a stream wake it many times a second: rounds paced by their cost
            if stopping.wait(round_gap(cost)):
                return
            self.beat.clear()
            started = time.thread_time()  # CPU: the GIL the round held, not its waits
            try:
                with self.round_lock:
                    self.status_round()
            except Exception:  # a bug must not end the status round
                log.exception("status round failed")
            cost = time.thread_time() - started

    def status_round(self) -> None:
        p = self.parts
        view = p.watcher.view()
        st = self.status
        now = time.time()
        st.heartbeat = now
        st.catalog_index = view.snapshot.index
        st.catalog_error = view.last_error
        st.consul_requests = view.requests
        if view.failing_since is None and view.complete:
            st.catalog_ok_at = now
        desired = self.applied.desired if self.applied else None
        alive = time.monotonic() - self.alive_at < WATCHDOG_STALE
        p.ops.heartbeat(st, desired, p.haproxy, loop_alive=alive)
        drain = p.drain.tick(p.haproxy, now)
        outcome = p.fleet.heartbeat(
            Beat(
                ready=st.ready and desired is not None,
                desired=desired,
                generation=st.generation,
                catalog_index=self.applied_index,
                fresh=view.complete and view.failing_since is None,
                now=datetime.now(UTC),
                reason=st.last_apply_message or "not ready",
                drained=drain.reason,
            )
        )
        if outcome is not None:
            st.cs_status, st.cs_error = outcome.status.value, outcome.error
        st.lock_holder = p.fleet.lock is not None and p.fleet.lock.held
        st.drain = drain.published(p.fleet.registry.in_maintenance)
        st.applied_index = self.applied_index
        try:
            write_status(p.haproxy.dir, st)
        except OSError as exc:
            log.warning("cannot write status: %s", exc)

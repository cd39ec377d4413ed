"""The daemon's operations side in one object: systemd notify, metrics and health endpoint,
certificate monitor (adapter wiring).

Keeps the orchestrator's fan-out small: the daemon makes a handful of calls (start, stop,
reloading/reloaded, applied, heartbeat, drained) and this object fans them out to
``health.notify``, ``health.metrics`` and ``health.certmonitor``. Everything here runs in the
daemon's main loop except the certificate probes (their own thread) and the HTTP server (its
own threads), which only read values the main loop published.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from sidecar.core.certs import CertReport, failing_servers
from sidecar.core.model import DesiredState
from sidecar.haproxy.process import HAProxy
from sidecar.health.certjob import local_cert_files
from sidecar.health.certmonitor import CertMonitor
from sidecar.health.endpoint import StatusServer
from sidecar.health.metrics import Metrics, update_from_status
from sidecar.health.notify import Notifier
from sidecar.health.status import Status, encoded
from sidecar.health.statusview import track_backends

log = logging.getLogger(__name__)
PROC_EVERY = 5.0  # seconds between two ``show proc`` for the old-workers count


def summary(status: Status) -> str:
    """The short ``STATUS=`` text systemd shows."""
    if not status.ready:
        return "waiting for the catalog and the first apply"
    stale = f", catalog error: {status.catalog_error[:80]}" if status.catalog_error else ""
    return f"serving {status.services} services, {status.servers_ready} servers ready{stale}"


class Operations:
    """Notify, metrics, health endpoint and certificate checks of one daemon."""

    def __init__(self, settings: Any, on_certs: Callable[[CertReport], None] | None = None,
                 notifier: Notifier | None = None) -> None:  # fmt: skip
        ops = settings
        self.notifier = notifier or Notifier()
        self.metrics = Metrics()
        self.server = (
            StatusServer(self.metrics, ops.status, ops.check) if ops.status.enabled else None
        )
        self.certs = CertMonitor(ops.certs, ops.check, settings.gateway.names,
                                 local_cert_files(settings), on_report=on_certs)  # fmt: skip
        self._exclude = ops.certs.exclude_failing
        self._watchdog_every = self.notifier.watchdog_interval()
        self._last_watchdog = -math.inf
        self._next_proc = 0.0
        self._old_workers: int | None = None
        self._ready_sent = False
        self._status_text = ""
        self._seen_at: float | None = None  # a catalog change taken, not applied yet
        self._rows_of: DesiredState | None = None  # the state status.backends was made from
        self._certs_of: CertReport | None = None  # the report status.certs was made from
        self.metrics.ops.cs_enabled.set(1 if settings.dirac_cs.enabled else 0)

    def start(self) -> None:
        if self.server is not None:
            try:
                self.server.start()
            except OSError as exc:  # a taken port must not stop the gateway
                log.error("metrics endpoint %s:%d not started: %s", *self.server.address, exc)
                self.server = None
        self.certs.start()

    def stop(self) -> None:
        self.notifier.stopping("stopping")
        self.certs.stop()
        if self.server is not None:
            self.server.stop()

    def reloading(self) -> None:
        self.notifier.reloading("reloading configuration")

    def reloaded(self, settings: Any) -> None:
        """After SIGHUP (applied or not): new certificate settings, then READY=1 again."""
        ops = settings
        self._exclude = ops.certs.exclude_failing
        self.metrics.ops.cs_enabled.set(1 if settings.dirac_cs.enabled else 0)
        self.certs.configure(ops.certs, ops.check, settings.gateway.names,
                             local_cert_files(settings))  # fmt: skip
        self.notifier.ready(self._status_text or "configuration reloaded")

    def applied(self, kind: str, seconds: float, desired: DesiredState | None) -> None:
        """After a successful apply (``kind`` is PlanKind.value)."""
        if kind in ("reload", "start"):
            self.metrics.observe_reload(seconds)
        if kind != "none":
            self.metrics.ops.observe_apply(kind, seconds)
            if self._seen_at is not None:
                self.metrics.ops.observe_propagation(time.monotonic() - self._seen_at)
        self._seen_at = None  # applied, or nothing to apply for it
        self.certs.set_targets(desired)

    def catalog_seen(self, now: float) -> None:
        """A catalog change arrived at monotonic ``now``: propagation starts (the first of a
        batch counts)."""
        if self._seen_at is None:
            self._seen_at = now

    def drained(self) -> frozenset[tuple[str, int]]:
        """Servers to keep out of rotation (``certs.exclude_failing``), for pipeline.Inputs."""
        report = self.certs.report
        if not self._exclude or report is None:
            return frozenset()
        return failing_servers(report)

    def heartbeat(
        self,
        status: Status,
        desired: DesiredState | None,
        haproxy: HAProxy,
        loop_alive: bool = True,
    ) -> None:
        """Call from the main loop before the status file is written."""
        now = time.time()
        fresh_state = desired is not self._rows_of  # else the rows and gauges are unchanged
        if fresh_state:
            status.backends = track_backends(status.backends, desired, now)
            self._rows_of = desired
        report = self.certs.report
        fresh_certs = report is not None and report is not self._certs_of
        if fresh_certs and report is not None:  # once per report, not once per round
            self._certs_of, status.certs = report, report.to_status()
        if time.monotonic() >= self._next_proc:
            self._next_proc = time.monotonic() + PROC_EVERY
            info = haproxy.proc(timeout=0.5)
            self._old_workers = len(info.old_workers) if info is not None else None
            if self._old_workers is not None and hasattr(status, "old_workers"):
                status.old_workers = self._old_workers
        record = status.record()
        up = {b.name: b.ready_count for b in desired.listed} if desired and fresh_state else None
        update_from_status(self.metrics, record, now, servers_up=up,
                           old_workers=self._old_workers, certs_changed=fresh_certs)  # fmt: skip
        if fresh_certs:
            # the gauges have the rows: status.json needs only their text (a row per server,
            # ~0.9 MB of dicts at 1,000 x 5 otherwise kept until the next report)
            status.certs = encoded(status.certs)
        self._notify(status, loop_alive)

    def _notify(self, status: Status, loop_alive: bool = True) -> None:
        text = summary(status)
        if status.ready and not self._ready_sent:
            self._ready_sent = self.notifier.ready(text) or not self.notifier.enabled
            self._status_text = text
        elif text != self._status_text:
            self.notifier.status(text)
            self._status_text = text
        every = self._watchdog_every
        due = every is not None and time.monotonic() - self._last_watchdog >= every
        if due and loop_alive:  # a hung main loop must let systemd's watchdog fire
            self.notifier.watchdog()  # the main loop is alive: it is calling us
            self._last_watchdog = time.monotonic()

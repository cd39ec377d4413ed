"""The certificate check in the daemon: a background thread that decides when to probe every
backend server and the sidecar's own certificate files, and hands each report on (adapter).

The probing runs in a child process (``health.certjob``, which runs ``health.certprobe``);
the judgement is ``core.certs`` (pure).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from sidecar.config.ops import CertSettings, CheckSettings
from sidecar.core.certs import CertFinding, CertReport
from sidecar.core.model import DesiredState
from sidecar.core.severity import Severity
from sidecar.health.certjob import ProbeError, ProbeJob, ProbeRequest, targets

log = logging.getLogger(__name__)


# --- in the daemon ----------------------------------------------------------------------------


class CertMonitor:
    """Runs the certificate check in a background thread: every ``interval`` seconds, soon
    after the set of servers changes, and on :meth:`rerun` (e.g. the CA directory changed).

    ``on_report`` is called from the monitor thread with each new report; it should only post
    an event to the daemon's queue (to drain failing servers) or store the report.
    """

    def __init__(
        self,
        certs: CertSettings,
        thresholds: CheckSettings,
        gateway_names: Sequence[str],
        local_files: Sequence[str] = (),
        on_report: Callable[[CertReport], None] | None = None,
        clock: Callable[[], float] = time.time,
        min_gap: float = 10.0,
        job: ProbeJob | None = None,
    ) -> None:
        self._job = job or ProbeJob()
        self._min_gap = min_gap  # seconds at least between two runs (catalog churn)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._on_report = on_report
        self._clock = clock
        self._desired: DesiredState | None = None
        self._full = True  # next run probes every server (interval, rerun, settings)
        self._thread: threading.Thread | None = None
        self.report: CertReport | None = None
        self.configure(certs, thresholds, gateway_names, local_files)

    def configure(
        self,
        certs: CertSettings,
        thresholds: CheckSettings,
        gateway_names: Sequence[str],
        local_files: Sequence[str] = (),
    ) -> None:
        """New settings (SIGHUP): taken at the next run, which happens soon."""
        with self._lock:
            self._config = (certs, thresholds, tuple(gateway_names), tuple(local_files))
            self._full = True
        self._wake.set()

    def set_targets(self, desired: DesiredState | None) -> None:
        """The servers to probe: called by the main loop after every apply, so it only keeps
        the state; the targets are worked out in the monitor's thread (5,000 at 1,000 x 5)."""
        with self._lock:
            before, self._desired = self._desired, desired
        if not _same_servers(before, desired):
            self._wake.set()

    def rerun(self) -> None:
        with self._lock:
            self._full = True
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="certs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._job.stop()  # a child probing right now is killed, not waited for
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_once(self) -> CertReport:
        """Probe the servers: all of them on a full run; after a change of the set of servers
        only the new ones (catalog churn must not cost a handshake with every backend)."""
        with self._lock:
            (certs, thresholds, names, files), desired = self._config, self._desired
            full, self._full = self._full or self.report is None, False
        now = self._clock()
        wanted = frozenset(targets(desired)) if desired is not None else frozenset()
        kept: tuple[CertFinding, ...] = ()
        if not full and self.report is not None:
            where = {(t.backend, t.server, t.address, t.port): t for t in wanted}
            kept = tuple(f for f in self.report.findings
                         if (f.backend, f.server, f.address, f.port) in where)  # fmt: skip
            done = {(f.backend, f.server, f.address, f.port) for f in kept}
            wanted = frozenset(t for key, t in where.items() if key not in done)
        if not full and not wanted and self.report is not None:  # nothing new: no child
            local = tuple(f for f in self.report.findings if not f.backend)
            report = CertReport(kept + local, self.report.checked_at)
        else:
            todo = tuple(sorted(wanted, key=lambda t: (t.backend, t.server, t.address, t.port)))
            report = self._probe(ProbeRequest(certs, thresholds, names, todo, files, now))
            report = CertReport(kept + report.findings, now)
        self.report = report
        log.log(
            logging.INFO if report.status is Severity.OK else logging.WARNING, "%s", report.summary
        )
        if self._on_report is not None:
            self._on_report(report)
        return report

    def _probe(self, request: ProbeRequest) -> CertReport:
        try:
            return self._job.run(request)
        except ProbeError as exc:  # the child failed, was killed or answered garbage
            finding = CertFinding(Severity.WARNING, (str(exc),), server="certs")
            return CertReport((finding,), request.now)

    def _run(self) -> None:
        last = time.monotonic() - self._min_gap
        while not self._stop.is_set():
            gap = self._min_gap - (time.monotonic() - last)
            if gap > 0 and self._stop.wait(gap):
                return
            self._wake.clear()
            last = time.monotonic()
            try:
                self.run_once()
            except Exception:  # a bug must not kill the thread: report and go on
                log.exception("certificate check failed unexpectedly")
            with self._lock:
                interval = self._config[0].interval
            if not self._wake.wait(interval):
                with self._lock:
                    self._full = True  # the periodic run re-checks everything


def _same_servers(before: DesiredState | None, after: DesiredState | None) -> bool:
    """Whether the servers are those of before (an unchanged backend is the same object)."""
    if before is None or after is None:
        return before is after
    pairs = zip(before.backends, after.backends, strict=False)
    return len(before.backends) == len(after.backends) and all(
        a is b or (a.name == b.name and a.servers == b.servers) for a, b in pairs
    )

"""The orchestrator: one event queue, the coalescing window, the first-render gate, the last
applied state (adapter wiring; policy lives in ``pipeline``, ``coalesce``, ``drift``).

Watch threads, signal handlers and timers only post events. The main loop turns events into
cycles: take the catalog view, run the pure pipeline, hand the plan to the applier, record the
status. Each cycle catches and reports its own failures; nothing in a cycle kills the daemon.
Reloads are paced (``min_reload_interval``, and deferred while too many old workers drain);
runtime changes are not. Every ``drift_interval`` HAProxy's real servers are compared with the
applied state and repaired.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType

from sidecar.base.errors import SidecarError
from sidecar.config.loader import read_token
from sidecar.config.schema import Settings
from sidecar.consul.client import ConsulClient
from sidecar.consul.confirm import HeldRemovals
from sidecar.consul.watcher import CatalogWatcher
from sidecar.core import pipeline
from sidecar.core.bindmemo import PREFLIGHT_RETRY, RELOAD_RETRY, BindMemo
from sidecar.core.model import Snapshot
from sidecar.core.plan import Plan, PlanKind, Rendered
from sidecar.daemon.drain import DrainControl
from sidecar.daemon.filewatch import FileWatcher
from sidecar.daemon.ops import Operations
from sidecar.fleet.member import Beat, FleetMember
from sidecar.fleet.registry import catalog_index
from sidecar.haproxy.applier import Applier
from sidecar.haproxy.binds import unbindable_ports
from sidecar.haproxy.inputs import build_inputs
from sidecar.haproxy.process import HAProxy, reload_deferred_until
from sidecar.health.status import Status, write_status
from sidecar.host.files import remove_stale_temps
from sidecar.host.netfacts import NetFacts

log = logging.getLogger(__name__)
TICK = 1.0
HEARTBEAT = 2.0  # seconds between status/metrics/notify rounds while nothing happens
COLLECT_EVERY = 2.0  # seconds between attempts to delete retired servers
BEAT_GAP = 0.2  # seconds at least between two status rounds (a stream of applies)
WATCHDOG_STALE = 10.0  # no WATCHDOG=1 once the main loop has not turned for this long
FLUSH_DELAY = 0.2  # seconds after a runtime change before its file is written (one per batch)


class Daemon:
    def __init__(
        self,
        settings: Settings,
        reload_settings: Callable[[], Settings],
        stop_haproxy: bool = False,
    ) -> None:
        self.settings = settings
        self._reload_settings = reload_settings
        self._stop_haproxy = stop_haproxy
        self.inputs = build_inputs(settings)
        self.events: queue.Queue[str] = queue.Queue()
        self.haproxy = HAProxy(settings)
        self.applier = Applier(self.haproxy)
        self.client, self.watcher = self._consul(settings)
        self.status = Status(pid=os.getpid(), started=time.time(), bind=settings.gateway.bind)
        self.applied: Rendered | None = None
        self.beat = threading.Event()  # wakes the status round (after an apply)
        self._beat_lock = threading.Lock()  # the status round vs SIGHUP (fleet, settings)
        self._alive_at = time.monotonic()  # the main loop's last turn (for the watchdog)
        self._next_collect = 0.0
        self._haproxy_up = False  # known to run (an apply succeeded since the last failure)
        self._flush_at = math.inf  # when the file of the last runtime changes is written
        self._failed_config: str | None = None
        self._retry_at = math.inf  # a deferred reload or a held-back removal to re-check
        self._next_drift = 0.0
        self._next_heartbeat = 0.0
        self._last_reload = -math.inf
        self.held = HeldRemovals(self.client, settings.consul, settings.apply.confirm_delay)
        self.ops = Operations(settings, on_certs=lambda report: self.events.put("certs"))
        self.files = self._file_watcher(settings)
        # Its own client: used from the main loop only. Unchanged facts are re-published at
        # most every 5 s (TTL pass, lock renew): the idle load on Consul stays low.
        self.fleet = FleetMember(settings, self._fleet_client(settings), min_interval=5.0)
        self._applied_index = 0
        self.net = NetFacts()  # own addresses, resolved host names: for the admission policy
        self.binds = BindMemo()  # public ports HAProxy cannot bind
        self.drain = DrainControl(settings.runtime_dir)  # ``sidecar drain``, polled each round

    def _file_watcher(self, settings: Settings) -> FileWatcher:
        """Settings file (and template) -> like SIGHUP; CA dirs and own certs -> re-check."""
        c = settings.certs
        return FileWatcher(
            [settings.source, settings.haproxy.template],
            [
                c.ca_dir,
                c.ca_file,
                c.client_cert,
                settings.consul.ca_file,
                settings.consul.cert_file,
            ],
            on_config=lambda: self.events.put("hup"),
            on_certs=lambda: self.ops.certs.rerun(),
        )

    @staticmethod
    def _fleet_client(settings: Settings) -> ConsulClient:
        return ConsulClient(settings.consul, read_token(settings.consul))

    def _consul(self, settings: Settings) -> tuple[ConsulClient, CatalogWatcher]:
        token = read_token(settings.consul)
        watcher = CatalogWatcher(settings.consul, token, lambda: self.events.put("catalog"))
        return ConsulClient(settings.consul, token), watcher

    # -- lifecycle -----------------------------------------------------------------------------

    def install_signals(self) -> None:
        def on_stop(signum: int, frame: FrameType | None) -> None:
            self.events.put("stop")

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self.events.put("hup")

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def run(self) -> int:
        threading.stack_size(512 * 1024)  # one thread per watch: keep them small
        self.haproxy.prepare()
        stale = remove_stale_temps(self.haproxy.dir)  # left by a SIGKILL between write/rename
        if stale:
            log.warning("removed stale temporary files: %s", ", ".join(stale))
        self.applied = self.applier.load_rendered(self.inputs)
        self.watcher.start()
        self.ops.start()
        self.net.status_port = self.ops.server.port if self.ops.server else None
        self.files.start()
        stopping = threading.Event()
        beats = threading.Thread(target=self._beats, args=(stopping,), name="status", daemon=True)
        beats.start()
        self._next_drift = time.monotonic() + self.settings.apply.drift_interval
        log.info(
            "watching Consul at %s for services tagged %r",
            self.settings.consul.address,
            self.settings.consul.tag,
        )
        try:
            self._loop()
        finally:
            self._flush()
            stopping.set()
            self.beat.set()
            beats.join(HEARTBEAT + 5.0)
            self.fleet.stop()  # releases the CS lock (instant takeover), deregisters
            self.net.close()
            self.files.stop()
            self.ops.stop()
            self.watcher.stop()
            if self._stop_haproxy:
                self.haproxy.stop()
            log.info("stopped")
        return 0

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            self._alive_at = now
            wake = min(self._retry_at, self._next_drift, self._next_collect, self._flush_at) - now
            try:
                first: str | None = self.events.get(timeout=max(0.0, min(TICK, wake)))
            except queue.Empty:
                first = None
            # A batch: everything that arrived meanwhile is applied in this one cycle; a change
            # never waits for the catalog to calm down (issue 12).
            events = {first} if first else set()
            while True:
                try:
                    events.add(self.events.get_nowait())
                except queue.Empty:
                    break
            if "stop" in events:
                return
            if "catalog" in events:
                self.ops.catalog_seen(time.monotonic())  # propagation histogram starts here
            if "hup" in events:
                self._hup()
            if "certs" in events:
                self._certs_changed()
            now = time.monotonic()
            acted = False
            if events & {"hup", "catalog", "certs"} or now >= self._retry_at:
                self._retry_at = math.inf
                acted = self.cycle()
            if now >= self._flush_at:
                self._flush()
            if now >= self._next_collect:
                self._next_collect = now + COLLECT_EVERY
                self.applier.collect()  # retired servers whose connections have ended
            if now >= self._next_drift:
                self._next_drift = now + self.settings.apply.drift_interval
                self.repair_drift()
            if acted or "hup" in events:
                self.beat.set()  # the status round runs in its own thread: never in the way

    def _certs_changed(self) -> None:
        drained = self.ops.drained()
        if drained != self.inputs.drained:
            self.inputs = dataclasses.replace(self.inputs, drained=drained)

    def _hup(self) -> None:
        self.ops.reloading()
        try:
            with self._beat_lock:
                self._reload()
        finally:
            self.ops.reloaded(self.settings)

    def _reload(self) -> None:
        try:
            settings = self._reload_settings()
            inputs = build_inputs(settings)
        except SidecarError as exc:
            log.error("configuration not reloaded, keeping the running one: %s", exc)
            return
        if settings.haproxy.runtime_dir != self.settings.haproxy.runtime_dir:
            log.error(
                "haproxy.runtime_dir cannot change on SIGHUP (restart the daemon); "
                "keeping the running configuration"
            )
            return
        consul_changed = settings.consul != self.settings.consul
        unchanged = settings == self.settings  # e.g. a file event: the template may differ
        self.settings = settings
        self.inputs = dataclasses.replace(inputs, drained=self.inputs.drained)
        log.info("configuration reloaded from %s%s", settings.source,
                 " (settings unchanged, template re-read)" if unchanged else "")  # fmt: skip
        if unchanged:
            return
        self.haproxy.settings = settings
        self.held.delay = settings.apply.confirm_delay
        if consul_changed:  # a new address, token or TLS setting: start the watches afresh
            self.watcher.stop()  # cancels its parked queries and ends its thread
            self.client.close()
            self.client, self.watcher = self._consul(settings)
            self.held.client, self.held.settings = self.client, settings.consul
            self.watcher.start()
            self.fleet.stop()
            self.fleet = FleetMember(settings, self._fleet_client(settings), min_interval=5.0)
        else:
            self.fleet.reconfigure(settings)

    # -- one cycle -----------------------------------------------------------------------------

    def cycle(self) -> bool:
        """One cycle; whether it applied (or tried to apply) anything."""
        try:
            return self._cycle()
        except SidecarError as exc:
            log.error("cycle failed: %s", exc)
            self.status.last_apply_ok, self.status.last_apply_message = False, str(exc)
            return True
        except Exception:  # a bug must not kill the daemon: report and go on
            log.exception("cycle failed unexpectedly")
            return True

    def _cycle(self) -> bool:
        view = self.watcher.view()
        self.status.catalog_complete = view.complete
        if not view.complete:
            return False  # nothing renders until every watch has answered once
        grace = self.settings.consul.reset_grace
        distrust = view.reset_at is not None and time.monotonic() - view.reset_at < grace
        if distrust:
            self._retry_at = min(self._retry_at, view.reset_at + grace)  # type: ignore[operator]
        self.held.confirm(view.snapshot, time.monotonic(), distrust)
        # `show proc` costs a round trip (and retries while the master re-executes): on the
        # runtime path HAProxy is known to run; a failed apply makes it ask again.
        running = self._haproxy_up or self.applier.running()
        self._fence(view.snapshot)
        target, plan = pipeline.cycle(
            view.snapshot,
            self.inputs,
            self.applied,
            running,
            self.held.confirmed,
            distrust,
            frozenset(self.applier.retired),
        )
        if plan.kind in (PlanKind.RELOAD, PlanKind.START) or self.binds.entries:
            target, plan = self._preflight(view.snapshot, target, plan, running, distrust)
        due = self.held.track(target.held, time.monotonic())
        if due is not None:
            self._retry_at = min(self._retry_at, due)
        for problem in self.status.record_problems(target.desired):
            log.warning("skipped: %s", problem)
        if plan.kind is PlanKind.NONE:
            self._applied_index = catalog_index(view.snapshot)
            known = self.applied.config if self.applied else None
            self.applied = dataclasses.replace(target, config=target.config or known)
            self.status.record_ready(target.desired, self.applied.config)
            self.ops.applied("none", 0.0, target.desired)
            return False
        if plan.kind is PlanKind.RELOAD and target.config == self._failed_config:
            return False  # this exact config already failed: wait for the next change
        if plan.kind is PlanKind.RELOAD and self._defer_reload():
            return True
        if self._apply(plan, target):
            self._applied_index = catalog_index(view.snapshot)
        return True

    def _flush(self) -> None:
        """Write the config of the runtime changes applied since the last write."""
        self._flush_at = math.inf
        try:
            config = self.applier.flush(self.inputs)
        except OSError as exc:
            log.error("cannot write %s: %s", self.haproxy.config, exc)
            return
        if config is not None:
            self.status.record_config(config)
            if self.applied is not None:
                self.applied = dataclasses.replace(self.applied, config=config)

    def _fence(self, snapshot: Snapshot) -> None:
        """The perimeter for this cycle: own addresses, resolved names (cached adapters)."""
        perimeter = self.net.perimeter(snapshot, self.settings, self.inputs.port_map)
        if perimeter != self.inputs.perimeter:
            self.inputs = dataclasses.replace(self.inputs, perimeter=perimeter)

    def _preflight(
        self, snapshot: Snapshot, target: Rendered, plan: Plan, running: bool, distrust: bool
    ) -> tuple[Rendered, Plan]:
        """A new public port that cannot be bound: leave that service out, retry later."""
        now = time.monotonic()
        old = (
            set(self.applied.desired.public_ports)
            if self.applied and self.applied.desired
            else set()
        )
        # ports the target adds, plus those left out whose retry time has come
        retry = set(self.binds.expire(now))
        new = (set(target.desired.public_ports if target.desired else ()) | retry) - old
        found = unbindable_ports(self.settings.gateway.bind, sorted(new)) if new else {}
        self.binds.learn(found, now, PREFLIGHT_RETRY, probe=True)
        if self.binds.as_inputs() == self.inputs.unbindable:
            return target, plan
        self.inputs = dataclasses.replace(self.inputs, unbindable=self.binds.as_inputs())
        due = self.binds.next_retry()
        if due is not None:
            self._retry_at = min(self._retry_at, due)
        return pipeline.cycle(
            snapshot,
            self.inputs,
            self.applied,
            running,
            self.held.confirmed,
            distrust,
            frozenset(self.applier.retired),
        )

    def _learn_bind_failures(self, mark: int) -> None:
        """After a failed reload: the frontends HAProxy itself could not bind go out alone."""
        found = self.haproxy.bind_failures(mark)
        # Only HAProxy can tell about a permission (its capabilities are not the daemon's);
        # a port in use or an address that is not local the preflight can look at again.
        now = time.monotonic()
        probe = {p: why for p, why in found.items() if "ermission" not in why}
        learnt = self.binds.learn(probe, now, PREFLIGHT_RETRY, probe=True)
        denied = {p: why for p, why in found.items() if p not in probe}
        if found and (self.binds.learn(denied, now, RELOAD_RETRY) or learnt):
            log.error(
                "haproxy cannot bind %s: leaving those services out and trying again at once",
                ", ".join(f"{port} ({why})" for port, why in sorted(found.items())),
            )
            self.inputs = dataclasses.replace(self.inputs, unbindable=self.binds.as_inputs())
            self._failed_config = None
            self._retry_at = time.monotonic()

    def _defer_reload(self) -> bool:
        """Pace reloads: a minimum interval, and not while too many old workers drain."""
        retry = reload_deferred_until(self.haproxy, self.settings.apply, self._last_reload)
        if retry is not None:
            self._retry_at = min(self._retry_at, retry)
        return retry is not None

    def _apply(self, plan: Plan, target: Rendered) -> bool:
        mark = self.haproxy.log_mark()
        result = self.applier.apply(plan, target, self.inputs)
        self._haproxy_up = result.ok
        if result.ok and result.kind is PlanKind.RUNTIME:
            self._flush_at = min(self._flush_at, time.monotonic() + FLUSH_DELAY)
        kind = result.kind.value
        self.status.record_apply(kind, result.ok, result.message, result.reloads, time.time())
        if result.kind in (PlanKind.RELOAD, PlanKind.START):
            self._last_reload = time.monotonic()
        if result.ok:
            self._failed_config = None
            self.applied = target
            self.held.applied()
            if result.kind is PlanKind.RUNTIME:
                self.status.runtime_changes += len(plan.commands)
            changes = ", ".join(plan.changes[:20]) or plan.reason
            log.info("applied %s in %.0f ms: %s", kind, result.seconds * 1000, changes)
            self.status.record_ready(target.desired, target.config)
            self.ops.applied(kind, result.seconds, target.desired)
            return True
        self._failed_config = target.config
        log.error("apply %s failed: %s", kind, result.message)
        if result.kind in (PlanKind.RELOAD, PlanKind.START):
            self._learn_bind_failures(mark)
        if result.rolled_back:
            config, _ = self.applier.load_applied()
            previous = self.applied.desired if self.applied else None
            self.applied = Rendered(previous, config or "", None)
        return False

    # -- blast-radius guard --------------------------------------------------------------------

    def repair_drift(self) -> None:
        applied = self.applied
        if applied is None or applied.desired is None or not self.status.ready:
            return
        if not self.applier.running():  # master gone (a killed worker takes it along in 2.6)
            log.error("haproxy is not running; starting it again")
            self._haproxy_up = False
            self._retry_at = time.monotonic()  # the next cycle plans START
            return
        if self.applier.repair_drift(applied.desired, self.settings):
            self.applied = Rendered(applied.desired, "", None)  # forces a reload
            self._retry_at = time.monotonic()

    # -- status --------------------------------------------------------------------------------

    def _beats(self, stopping: threading.Event) -> None:
        """The status round, in its own thread: every HEARTBEAT seconds and after an apply.

        Status file, metrics, sd_notify and the fleet (gateway registry, CS lock and writer)
        cost milliseconds to tens of milliseconds (Consul round trips, a CS write): in the main
        loop they would delay the next catalog change.
        """
        while not stopping.is_set():
            self.beat.wait(HEARTBEAT)
            # applies in a stream wake it many times a second: one round per BEAT_GAP at most
            if stopping.wait(BEAT_GAP):
                return
            self.beat.clear()
            try:
                with self._beat_lock:
                    self._heartbeat()
            except Exception:  # a bug must not end the status round
                log.exception("status round failed")

    def _heartbeat(self) -> None:
        view = self.watcher.view()
        st = self.status
        now = time.time()
        st.heartbeat = now
        st.catalog_index = view.snapshot.index
        st.catalog_error = view.last_error
        st.consul_requests = view.requests
        if view.failing_since is None and view.complete:
            st.catalog_ok_at = now
        desired = self.applied.desired if self.applied else None
        alive = time.monotonic() - self._alive_at < WATCHDOG_STALE
        self.ops.heartbeat(st, desired, self.haproxy, loop_alive=alive)
        drain = self.drain.tick(self.haproxy, now)
        outcome = self.fleet.heartbeat(
            Beat(
                ready=st.ready and desired is not None,
                desired=desired,
                generation=st.generation,
                catalog_index=self._applied_index,
                fresh=view.complete and view.failing_since is None,
                now=datetime.now(UTC),
                reason=st.last_apply_message or "not ready",
                drained=drain.reason,
            )
        )
        if outcome is not None:
            st.cs_status, st.cs_error = outcome.status.value, outcome.error
        st.lock_holder = self.fleet.lock is not None and self.fleet.lock.held
        st.drain = drain.published(self.fleet.registry.in_maintenance)
        st.applied_index = self._applied_index
        try:
            write_status(self.haproxy.dir, st)
        except OSError as exc:
            log.warning("cannot write status: %s", exc)

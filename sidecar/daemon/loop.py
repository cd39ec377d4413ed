"""The daemon's loop: events in, cycles of the pure pipeline, plans to the applier (adapter
wiring; the decisions are the core's: ``pipeline``, ``plan``, ``schedule``, ``bindmemo``).

Watches, signal handlers, the file watcher and the certificate monitor only post events (a
SIGHUP's settings file is read in a thread, which posts ``SETTINGS_READ``). Each
turn of the loop takes every event that arrived (a burst is one batch: a change never waits for
the catalog to calm down) and every deadline that is due (``core.schedule.Why``), runs at most
one cycle (catalog view -> pipeline -> plan -> apply), and does the chores: retired servers,
drift repair, and after runtime changes their config file (``core.schedule.flush_at``),
handed to the flush thread (``daemon.flusher``). Each cycle catches and reports its own
failures; nothing in a cycle kills the daemon. The status round runs in its own thread
(``daemon.round``). The parts come from ``daemon.wiring``; the clock is passed in, so a unit
test drives ``step`` with fakes and a fake clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from sidecar.base.errors import SidecarError
from sidecar.config.schema import Settings
from sidecar.core.plan import Rendered
from sidecar.core.schedule import CYCLE, Deadlines, Why
from sidecar.daemon import wiring
from sidecar.daemon.cycle import Cycle
from sidecar.daemon.flusher import FLUSHED, Flusher
from sidecar.daemon.portguard import PortGuard
from sidecar.daemon.round import HEARTBEAT, StatusRound
from sidecar.haproxy.inputs import build_inputs
from sidecar.health.status import Status
from sidecar.host import memory
from sidecar.host.files import remove_stale_temps

log = logging.getLogger(__name__)
TICK = 1.0  # seconds at most between two turns of the loop
COLLECT_EVERY = 2.0  # seconds between attempts to delete retired servers
TRIM_GAP = 5.0  # seconds at least between two heap trims, each after a quiet spell
TRIM_QUIET = 1.0  # seconds without a cycle before a trim (it can hold the loop ~15 ms)
TRIGGERS = frozenset({"catalog", "certs"})  # events that run a cycle (and a SIGHUP, once read)
SETTINGS_READ = "settings"  # a SIGHUP's settings are ready (read in a thread of their own)


class Daemon(Cycle, StatusRound):
    def __init__(
        self,
        settings: Settings,
        reload_settings: Callable[[], Settings],
        stop_haproxy: bool = False,
        parts: wiring.Parts | None = None,
        clock: Callable[[], float] = time.monotonic,
        ports: PortGuard | None = None,
    ) -> None:
        self.settings = settings
        self._reload_settings = reload_settings
        self._stop_haproxy = stop_haproxy
        self.clock = clock
        self.inputs = build_inputs(settings)
        self.events: queue.Queue[str] = queue.Queue()
        self.parts = parts or wiring.build(settings, self.events.put)
        self.flusher = Flusher(self.events.put)  # the file of runtime changes, off the loop
        self.status = Status(pid=os.getpid(), started=time.time(), bind=settings.gateway.bind)
        self.applied: Rendered | None = None
        self.beat = threading.Event()
        self.round_lock = threading.Lock()
        self.alive_at = clock()
        self.applied_index = 0
        self.deadlines = Deadlines()
        self.ports = ports or PortGuard()  # a fake bind probe in unit tests
        self._haproxy_up = False  # known to run (an apply succeeded since the last failure)
        self._failed_config: str | None = None  # this exact config failed: not again
        self._last_reload = -math.inf
        self.trim_heap: Callable[[], object] = memory.trim  # recorders in unit tests
        self.settle_heap: Callable[[bool], object] = memory.settle
        self._settled_full_at = clock()  # ``run`` freezes start-up's objects (a full settle)
        self._wanted_at = -math.inf  # when a cycle was last asked for
        self._trimmed_at = -math.inf  # the last heap trim
        # A SIGHUP's file is read off the loop (``host.apart``'s child takes ~0.2 s), so that
        # catalog changes keep being applied meanwhile; inline in unit tests.
        self.spawn: Callable[[Callable[[], None]], object] = _in_thread
        self._hup_read: Settings | SidecarError | None = None  # read, not yet applied
        self._hup_busy = False  # a read is under way
        self._hup_again = False  # another SIGHUP came during it: read once more after

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
        p = self.parts
        p.haproxy.prepare()
        stale = remove_stale_temps(p.haproxy.dir)  # left by a SIGKILL between write/rename
        if stale:
            log.warning("removed stale temporary files: %s", ", ".join(stale))
        self.applied = p.applier.load_rendered(self.inputs)
        # start-up's objects out of the collector's way before the first answer (host.memory)
        frozen = self.settle_heap(True)
        log.debug("start-up objects frozen for the garbage collector: %s", frozen)
        p.watcher.start()
        p.ops.start()
        p.net.status_port = p.ops.server.port if p.ops.server else None
        p.files.start()
        stopping = threading.Event()
        rounds = threading.Thread(
            target=self.status_rounds, args=(stopping,), name="status", daemon=True
        )
        rounds.start()
        self.deadlines.every(Why.DRIFT, self.clock() + self.settings.apply.drift_interval)
        self.deadlines.every(Why.COLLECT, self.clock())
        log.info(
            "watching Consul at %s for services tagged %r",
            self.settings.consul.address,
            self.settings.consul.tag,
        )
        try:
            while self.step(self._next_events()):
                pass
        finally:
            self._flush()
            stopping.set()
            self.beat.set()
            rounds.join(HEARTBEAT + 5.0)
            p = self.parts  # a SIGHUP may have replaced some
            p.fleet.stop()  # releases the CS lock (instant takeover), deregisters
            p.net.close()
            p.files.stop()
            p.ops.stop()
            p.watcher.stop()
            if self._stop_haproxy:
                p.haproxy.stop()
            log.info("stopped")
        return 0

    def _next_events(self) -> set[str]:
        """Block until an event or the next deadline (at most ``TICK``); then take every
        event that is waiting, as one batch."""
        self.alive_at = now = self.clock()
        wait = max(0.0, min(TICK, self.deadlines.next() - now))
        events: set[str] = set()
        with contextlib.suppress(queue.Empty):
            events.add(self.events.get(timeout=wait))
        while True:
            try:
                events.add(self.events.get_nowait())
            except queue.Empty:
                return events

    def step(self, events: set[str]) -> bool:
        """One turn: the events, the due deadlines, at most one cycle; False on "stop"."""
        if "stop" in events:
            return False
        p = self.parts
        if "catalog" in events:
            # the propagation histogram starts when the answer came, not when it is taken
            p.ops.catalog_seen(p.watcher.take_answered() or self.clock())
        if "hup" in events:
            self._read_for_hup()
        reloaded = self._hup_read is not None  # (its SETTINGS_READ event may still be queued)
        if reloaded:
            self._hup()
        if "certs" in events:
            self._certs_changed()
        now = self.clock()
        due = self.deadlines.take_due(now)
        wanted = bool(events & TRIGGERS or due & CYCLE or reloaded)
        acted = wanted and self.cycle()
        if Why.FLUSH in due:
            self._flush_later()
        if FLUSHED in events:
            self._flushed()
        if wanted:
            self._wanted_at = now
        if Why.COLLECT in due:
            self.deadlines.every(Why.COLLECT, now + COLLECT_EVERY)
            p.applier.collect()  # retired servers whose connections have ended
            dirty = self._wanted_at > self._trimmed_at  # a cycle since the last trim
            quiet = now - self._wanted_at >= TRIM_QUIET
            if dirty and quiet and now - self._trimmed_at >= TRIM_GAP:
                # what survived the burst is frozen for the collector, so that a collection
                # in the next stream walks only what changed; the garbage of the burst stays
                # resident unless trimmed (host.memory)
                full = now - self._settled_full_at >= memory.FULL_EVERY
                frozen = self.settle_heap(full)
                trimmed = self.trim_heap()
                log.debug("heap settled (%s frozen%s) and trimmed (%s)", frozen,
                          ", full" if full else "", trimmed)  # fmt: skip
                self._trimmed_at = now
                if full:
                    self._settled_full_at = now
        if Why.DRIFT in due:
            self.deadlines.every(Why.DRIFT, now + self.settings.apply.drift_interval)
            self.repair_drift()
        if acted or reloaded:
            self.beat.set()  # the status round runs in its own thread: never in the way
        return True

    def _certs_changed(self) -> None:
        drained = self.parts.ops.drained()
        if drained != self.inputs.drained:
            self.inputs = dataclasses.replace(self.inputs, drained=drained)

    def _read_for_hup(self) -> None:
        if self._hup_busy:
            self._hup_again = True
            return
        self._hup_busy = True
        self.parts.ops.reloading()

        def read() -> None:
            try:
                result: Settings | SidecarError = self._reload_settings()
            except SidecarError as exc:
                result = exc
            except Exception as exc:  # a bug must not leave the SIGHUP pending forever
                log.exception("reading the settings failed")
                result = SidecarError(f"settings not read: {exc}")
            self._hup_read = result
            self.events.put(SETTINGS_READ)

        self.spawn(read)

    def _hup(self) -> None:
        read, self._hup_read, self._hup_busy = self._hup_read, None, False
        try:
            with self.round_lock:
                self._reload(read)
        finally:
            self.parts.ops.reloaded(self.settings)
        if self._hup_again:
            self._hup_again = False
            self._read_for_hup()

    def _reload(self, read: Settings | SidecarError | None) -> None:
        try:
            if not isinstance(read, Settings):
                raise read or SidecarError("no settings read")
            settings = read
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
        old, unchanged = self.settings, settings == self.settings
        self.settings = settings
        self.inputs = dataclasses.replace(
            inputs, drained=self.inputs.drained, unbindable=self.inputs.unbindable
        )
        log.info("configuration reloaded from %s%s", settings.source,
                 " (settings unchanged, template re-read)" if unchanged else "")  # fmt: skip
        if not unchanged:
            wiring.rewire(self.parts, old, settings, self.events.put)


def _in_thread(read: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=read, name="settings", daemon=True)
    thread.start()
    return thread

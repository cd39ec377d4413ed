"""The orchestrator: one event queue, the coalescing window, the first-render gate, the last
applied state (adapter wiring; policy lives in ``pipeline``).

Watch threads, signal handlers and timers only post events. The main loop turns events into
cycles: take the catalog view, run the pure pipeline, hand the plan to the applier, record the
status. Each cycle catches and reports its own failures; nothing in a cycle kills the daemon.

Coalescing: a lone change is applied at once (leading edge); changes that follow within the
quiet window are gathered and applied together, at the latest ``max_delay`` after the first.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from sidecar import pipeline
from sidecar.apply.applier import Applier
from sidecar.apply.haproxy import HAProxy
from sidecar.catalog.client import ConsulClient
from sidecar.catalog.watcher import CatalogWatcher
from sidecar.errors import SidecarError
from sidecar.plan import PlanKind, Rendered, skeleton
from sidecar.portmap import load_port_map
from sidecar.render.haproxy import load_template, render_config
from sidecar.settings import Settings, read_token
from sidecar.status import Status, write_status

log = logging.getLogger(__name__)
TICK = 1.0


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # "catalog", "hup", "stop"


def build_inputs(settings: Settings) -> pipeline.Inputs:
    try:
        port_map = load_port_map(settings.port_map_path)
    except (OSError, ValueError) as exc:
        raise SidecarError(f"port map: {exc}") from None
    return pipeline.Inputs(settings, port_map, load_template(settings.template_path))


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
        self.events: queue.Queue[Event] = queue.Queue()
        self.haproxy = HAProxy(settings)
        self.applier = Applier(self.haproxy)
        token = read_token(settings.consul)
        self.watcher = CatalogWatcher(
            settings.consul,
            lambda: ConsulClient(settings.consul, token),
            lambda: self.events.put(Event("catalog")),
        )
        self.status = Status(pid=os.getpid(), started=time.time(), bind=settings.gateway.bind)
        self.applied: Rendered | None = None
        self._failed_config: str | None = None
        self._last_problems: tuple[str, ...] = ()

    # -- lifecycle -----------------------------------------------------------------------------

    def install_signals(self) -> None:
        def on_stop(signum: int, frame: FrameType | None) -> None:
            self.events.put(Event("stop"))

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self.events.put(Event("hup"))

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def run(self) -> int:
        threading.stack_size(512 * 1024)  # one thread per watch: keep them small
        self.haproxy.prepare()
        self.applied = self._load_applied()
        self.watcher.start()
        log.info(
            "watching Consul at %s for services tagged %r",
            self.settings.consul.address,
            self.settings.consul.tag,
        )
        try:
            self._loop()
        finally:
            self.watcher.stop()
            if self._stop_haproxy:
                self.haproxy.stop()
            log.info("stopped")
        return 0

    def _load_applied(self) -> Rendered | None:
        config, desired = self.applier.load_applied()
        if config is None:
            return None
        shape = None
        if desired is not None:
            shape = render_config(self.inputs.template, skeleton(desired), self.settings)
        return Rendered(desired, config, shape)

    def _loop(self) -> None:
        s = self.settings.apply
        pending_since: float | None = None
        last_event = last_cycle = 0.0
        while True:
            now = time.monotonic()
            timeout = TICK
            if pending_since is not None:
                due = min(last_event + s.quiet, pending_since + s.max_delay)
                timeout = max(0.0, min(TICK, due - now))
            try:
                event: Event | None = self.events.get(timeout=timeout)
            except queue.Empty:
                event = None
            now = time.monotonic()
            if event is not None and event.kind == "stop":
                return
            if event is not None and event.kind == "hup":
                self._hup()
                pending_since = pending_since or now
            elif event is not None:  # catalog
                if pending_since is None and now - last_cycle >= s.quiet:
                    pending_since = now - s.max_delay  # leading edge: apply at once
                pending_since = pending_since or now
                last_event = now
            due_now = pending_since is not None and (
                now - last_event >= s.quiet or now - pending_since >= s.max_delay
            )
            if due_now:
                pending_since = None
                last_cycle = now
                self.cycle()
            self._heartbeat()

    def _hup(self) -> None:
        try:
            settings = self._reload_settings()
            inputs = build_inputs(settings)
        except SidecarError as exc:
            log.error("configuration not reloaded, keeping the running one: %s", exc)
            return
        self.settings, self.inputs = settings, inputs
        self.haproxy.settings = settings
        log.info("configuration reloaded from %s", settings.source)

    # -- one cycle -----------------------------------------------------------------------------

    def cycle(self) -> None:
        try:
            self._cycle()
        except SidecarError as exc:
            log.error("cycle failed: %s", exc)
            self.status.last_apply_ok, self.status.last_apply_message = False, str(exc)
        except Exception:  # a bug must not kill the daemon: report and go on
            log.exception("cycle failed unexpectedly")

    def _cycle(self) -> None:
        view = self.watcher.view()
        self.status.catalog_complete = view.complete
        if not view.complete:
            return  # nothing renders until every watch has answered once
        target, plan = pipeline.cycle(
            view.snapshot, self.inputs, self.applied, self.applier.running()
        )
        self._report_problems(target)
        if plan.kind is PlanKind.NONE:
            self.applied = target
            self._mark_ready(target)
            return
        if target.config == self._failed_config and plan.kind is not PlanKind.START:
            return  # this exact config already failed: wait for the next change
        result = self.applier.apply(plan, target)
        st = self.status
        st.last_apply_kind, st.last_apply_ok = result.kind.value, result.ok
        st.last_apply_message, st.last_apply_at = result.message, time.time()
        st.applies[result.kind.value] = st.applies.get(result.kind.value, 0) + 1
        st.reloads += result.reloads
        if result.ok:
            self._failed_config = None
            self.applied = target
            if result.kind is PlanKind.RUNTIME:
                st.runtime_changes += len(plan.commands)
            log.info(
                "applied %s in %.0f ms: %s",
                result.kind.value,
                result.seconds * 1000,
                ", ".join(plan.changes[:20]) or plan.reason,
            )
            self._mark_ready(target)
        else:
            st.reload_failures += 1 if result.kind is not PlanKind.RUNTIME else 0
            self._failed_config = target.config
            log.error("apply %s failed: %s", result.kind.value, result.message)
            if result.rolled_back:
                config, _ = self.applier.load_applied()
                self.applied = Rendered(None, config or "", None)

    def _mark_ready(self, target: Rendered) -> None:
        st = self.status
        st.ready = True
        if target.desired is not None:
            st.services = len(target.desired.backends)
            st.servers_ready = sum(b.ready_count for b in target.desired.backends)
            st.public_ports = list(target.desired.public_ports)
        st.generation = hashlib.sha256(target.config.encode()).hexdigest()[:16]

    def _report_problems(self, target: Rendered) -> None:
        problems = tuple(str(p) for p in target.desired.problems) if target.desired else ()
        if problems != self._last_problems:
            for problem in sorted(set(problems) - set(self._last_problems)):
                log.warning("skipped: %s", problem)
            self._last_problems = problems
        self.status.problems = list(problems)

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
        try:
            write_status(self.haproxy.dir, st)
        except OSError as exc:
            log.warning("cannot write status: %s", exc)

"""One cycle of the daemon: catalog view -> pure pipeline -> plan -> applier, and what the
loop does around it (the ports preflight, reload pacing, the runtime-change file, drift
repair). A mixin of ``daemon.loop.Daemon`` (adapter glue; the decisions are the core's).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from sidecar.base.errors import SidecarError
from sidecar.config.schema import Settings
from sidecar.core import pipeline
from sidecar.core.model import Snapshot
from sidecar.core.plan import Plan, PlanKind, Rendered
from sidecar.core.schedule import Deadlines, Why, distrust_until, flush_at, reload_wait
from sidecar.daemon.flusher import Flusher
from sidecar.daemon.portguard import PortGuard
from sidecar.daemon.wiring import Parts
from sidecar.fleet.registry import catalog_index
from sidecar.health.status import Status

log = logging.getLogger(__name__)


class Cycle:
    """What a cycle reads and writes of the daemon; ``Daemon`` provides all of it."""

    settings: Settings
    inputs: pipeline.Inputs
    parts: Parts
    status: Status
    applied: Rendered | None
    applied_index: int
    deadlines: Deadlines
    ports: PortGuard
    clock: Callable[[], float]
    flusher: Flusher
    _haproxy_up: bool
    _failed_config: str | None
    _last_reload: float

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
        p = self.parts
        view = p.watcher.view()
        self.status.catalog_complete = view.complete
        if not view.complete:
            return False  # nothing renders until every watch has answered once
        now = self.clock()
        trust_back = distrust_until(view.reset_at, now, self.settings.consul.reset_grace)
        distrust = trust_back is not None
        self.deadlines.ask(Why.TRUST_BACK, trust_back)
        p.held.confirm(view.snapshot, now, distrust)
        # `show proc` costs a round trip (and retries while the master re-executes): on the
        # runtime path HAProxy is known to run; a failed apply makes it ask again.
        running = self._haproxy_up or p.applier.running()
        self._fence(view.snapshot)
        target, plan = self._plan(view.snapshot, running, distrust)
        reloads = plan.kind in (PlanKind.RELOAD, PlanKind.START)
        if (reloads or self.ports.active) and self._preflight(target):
            target, plan = self._plan(view.snapshot, running, distrust)
        self.deadlines.ask(Why.REMOVAL_DUE, p.held.track(target.held, self.clock()))
        for problem in self.status.record_problems(target.desired):
            log.warning("skipped: %s", problem)
        if plan.kind is PlanKind.NONE:
            self.applied_index = catalog_index(view.snapshot)
            self.applied = target.textless()
            self.status.record_ready(target.desired, target.config)
            p.ops.applied("none", 0.0, target.desired)
            return False
        if plan.kind is PlanKind.RELOAD and target.config == self._failed_config:
            return False  # this exact config already failed: wait for the next change
        if plan.kind is PlanKind.RELOAD and self._reload_paced():
            return True
        if self._apply(plan, target):
            self.applied_index = catalog_index(view.snapshot)
        return True

    def _plan(self, snapshot: Snapshot, running: bool, distrust: bool) -> tuple[Rendered, Plan]:
        return pipeline.cycle(
            snapshot,
            self.inputs,
            self.applied,
            running,
            self.parts.held.confirmed,
            distrust,
            frozenset(self.parts.applier.retired),
        )

    def _flush_later(self) -> None:
        """Hand the runtime changes applied since the last write to the flush thread."""
        self.deadlines.at.pop(Why.FLUSH, None)
        self.flusher.submit(self.parts.applier, self.inputs)

    def _flushed(self) -> None:
        """The flush thread wrote a file: record the config HAProxy restarts from."""
        written = self.flusher.done()
        if written is not None:
            self.status.record_config(written)  # its hash: the text itself is the file's

    def _flush(self) -> None:
        """Write the config of the runtime changes now (at stop): after the thread's job."""
        self.deadlines.at.pop(Why.FLUSH, None)
        self.flusher.stop()
        self._flushed()
        try:
            config = self.parts.applier.flush(self.inputs)
        except OSError as exc:
            log.error("cannot write %s: %s", self.parts.haproxy.config, exc)
            return
        if config is not None:
            self.status.record_config(config)

    def _fence(self, snapshot: Snapshot) -> None:
        """The perimeter for this cycle: own addresses, resolved names (cached adapters)."""
        perimeter = self.parts.net.perimeter(snapshot, self.settings, self.inputs.port_map)
        if perimeter != self.inputs.perimeter:
            self.inputs = dataclasses.replace(self.inputs, perimeter=perimeter)

    def _preflight(self, target: Rendered) -> bool:
        """New public ports that cannot be bound: leave those services out (whether the
        ports to leave out changed, so the cycle plans again)."""
        applied = self.applied.desired if self.applied else None
        verdict = self.ports.preflight(
            self.settings.gateway.bind,
            applied.public_ports if applied else (),
            target.desired.public_ports if target.desired else (),
            self.clock(),
        )
        self.deadlines.ask(Why.BIND_RETRY, verdict.retry_at)
        if verdict.unbindable == self.inputs.unbindable:
            return False
        self.inputs = dataclasses.replace(self.inputs, unbindable=verdict.unbindable)
        return True

    def _reload_paced(self) -> bool:
        """Pace reloads: a minimum interval, and not while too many old workers drain."""
        now, apply = self.clock(), self.settings.apply
        wait = reload_wait(now, self._last_reload, apply.min_reload_interval, 0, 0)
        if wait is None:  # only then is HAProxy asked about its old workers
            info = self.parts.haproxy.proc()
            old = len(info.old_workers) if info else 0
            wait = reload_wait(now, self._last_reload, 0.0, old, apply.max_old_workers)
            if wait is not None:
                log.warning("reload deferred: %d old workers still draining", old)
        self.deadlines.ask(Why.RELOAD_PACED, wait)
        return wait is not None

    def _apply(self, plan: Plan, target: Rendered) -> bool:
        p = self.parts
        mark = p.haproxy.log_mark()
        result = p.applier.apply(plan, target, self.inputs)
        self._haproxy_up = result.ok
        if result.ok and result.kind is PlanKind.RUNTIME and Why.FLUSH not in self.deadlines.at:
            self.deadlines.every(Why.FLUSH, flush_at(self.clock(), self.flusher.cost))
        kind = result.kind.value
        self.status.record_apply(kind, result.ok, result.message, result.reloads, time.time())
        if result.kind in (PlanKind.RELOAD, PlanKind.START):
            self._last_reload = self.clock()
        if result.ok:
            self._failed_config = None
            self.applied = target.textless()
            p.held.applied()
            if result.kind is PlanKind.RUNTIME:
                self.status.runtime_changes += len(plan.commands)
            changes = ", ".join(plan.changes[:20]) or plan.reason
            log.info("applied %s in %.0f ms: %s", kind, result.seconds * 1000, changes)
            self.status.record_ready(target.desired, target.config)
            p.ops.applied(kind, result.seconds, target.desired)
            return True
        self._failed_config = target.config
        log.error("apply %s failed: %s", kind, result.message)
        if result.kind in (PlanKind.RELOAD, PlanKind.START):
            found = p.haproxy.bind_failures(mark)
            if self.ports.reload_failed(found, self.clock()):  # those frontends go out alone
                self.inputs = dataclasses.replace(self.inputs, unbindable=self.ports.unbindable())
                self._failed_config = None
                self.deadlines.ask(Why.REPLAN, self.clock())
        if result.rolled_back:
            config, _ = p.applier.files.read()
            previous = self.applied.desired if self.applied else None
            self.applied = Rendered(previous, config or "", None)
        return False

    def repair_drift(self) -> None:
        applied, p = self.applied, self.parts
        if applied is None or applied.desired is None or not self.status.ready:
            return
        if not p.applier.running():  # master gone (a killed worker takes it along in 2.6)
            log.error("haproxy is not running; starting it again")
            self._haproxy_up = False
            self.deadlines.ask(Why.REPLAN, self.clock())  # the next cycle plans START
            return
        if p.applier.repair_drift(applied.desired, self.settings):
            self.applied = Rendered(applied.desired, "", None)  # forces a reload
            self.deadlines.ask(Why.REPLAN, self.clock())


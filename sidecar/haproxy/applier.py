"""Carry out a plan against HAProxy (adapter; the decisions were made in ``plan``).

- RUNTIME: runtime API commands (dynamic servers added, changed, put in maintenance); the
  rendered file follows a moment later (``take_pending`` / ``write_pending``, in the daemon's
  flush thread: no reload) so that a later reload or restart starts from the same servers. A
  command HAProxy refuses falls back to a reload. A server taken out is deleted (``del
  server``) once it has no connection left; until then it is *retired* (kept here, tried
  again by ``collect``, revived if its instance comes back).
- RELOAD: ``haproxy -c`` first; a config that fails never replaces the running one. START (no
  HAProxy runs): the master's own parse is the check, the files are put back if it fails.
  The last good file is kept; after a reload the new worker must answer on the admin socket and
  every frontend must accept connections, else the last good config is restored and reloaded.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

from sidecar.base.errors import HAProxyError, SidecarError
from sidecar.config.schema import Settings
from sidecar.core.answers import parse_servers_state, servers_state_digest
from sidecar.core.drift import find_drift
from sidecar.core.model import DesiredState, Server, ServerState
from sidecar.core.pipeline import Inputs, with_config
from sidecar.core.plan import Plan, PlanKind, Rendered, ServerKey, backend_id, structure
from sidecar.core.render import render_config, server_options
from sidecar.haproxy.binds import unbound_ports
from sidecar.haproxy.configfiles import ConfigFiles
from sidecar.haproxy.process import HAProxy
from sidecar.host.files import atomic_copy, atomic_write, read_text

log = logging.getLogger(__name__)
APPLIED_FILE = "applied.json"


@dataclass(frozen=True, slots=True)
class ApplyResult:
    kind: PlanKind
    ok: bool
    message: str
    seconds: float
    reloads: int = 0
    rolled_back: bool = False


class Applier:
    def __init__(self, haproxy: HAProxy) -> None:
        self.haproxy = haproxy
        self.applied_path = haproxy.dir / APPLIED_FILE
        self.files = ConfigFiles(haproxy.config, self.applied_path)
        self.retired: set[ServerKey] = set()  # in maintenance, deleted once idle
        self.pending: Rendered | None = None  # applied at runtime, its file not written yet
        self._clean: tuple[DesiredState, tuple[object, ...]] | None = None  # last drift check

    def running(self) -> bool:
        return self.haproxy.proc() is not None

    def load_rendered(self, inputs: Inputs) -> Rendered | None:
        """What HAProxy runs, as the planner compares it (None when nothing was applied)."""
        config, desired = self.files.read()
        if config is None:
            return None
        shape = None
        if (
            desired is not None
            and render_config(inputs.template, desired, inputs.settings) == config
        ):
            # rendered with today's settings and template: the structure is known, and a
            # restarted daemon converges through the runtime API, without a reload
            shape = structure(desired, inputs.render_key)
            desired = self._as_running(desired)
        return Rendered(desired, config, shape)

    def _as_running(self, desired: DesiredState) -> DesiredState:
        """``desired`` with the servers HAProxy really has (the file of the last runtime
        changes may not have been written when the daemon was killed): a restart plans
        against what runs. Servers in maintenance are retired ones."""
        try:
            actual = parse_servers_state(self.haproxy.servers_state())
        except SidecarError:
            return desired  # HAProxy not running: the next plan starts it
        by_backend: dict[str, list[Server]] = {}
        for item in actual:
            if item.server.state is ServerState.MAINT:
                self.retired.add((item.backend, item.server.name))
            else:
                by_backend.setdefault(item.backend, []).append(item.server)
        backends = []
        for backend in desired.backends:
            known = {s.name: s for s in backend.servers}
            running = sorted(
                (
                    dataclasses.replace(
                        s, instance=known[s.name].instance, weight=known[s.name].weight
                    )
                    if s.name in known
                    else s
                    for s in by_backend.get(backend_id(backend), [])
                ),
                key=lambda s: s.name,
            )
            backends.append(dataclasses.replace(backend, servers=tuple(running)))
        return dataclasses.replace(desired, backends=tuple(backends))

    def apply(self, plan: Plan, target: Rendered, inputs: Inputs | None = None) -> ApplyResult:
        """Carry ``plan`` out; ``inputs`` render the config should the runtime API refuse and
        a reload be needed instead."""
        started = time.monotonic()
        try:
            if plan.kind is PlanKind.NONE:
                return ApplyResult(plan.kind, True, "nothing to do", 0.0)
            if plan.kind is PlanKind.RUNTIME:
                errors = self.haproxy.runtime(plan.commands)
                if not errors:
                    self.retired.difference_update(plan.revived)
                    self._retire(plan.retire)
                    self.pending = target  # the file follows (``flush``): off the change's path
                    done = f"{len(plan.commands)} runtime commands"
                    return ApplyResult(plan.kind, True, done, time.monotonic() - started)
                log.warning("runtime API refused %d commands (%s); reloading instead",
                            len(errors), errors[0])  # fmt: skip
                if inputs is not None:
                    target = with_config(target, inputs)
                return self._reload(target, started, PlanKind.RELOAD)
            return self._reload(target, started, plan.kind)
        except SidecarError as exc:
            return ApplyResult(plan.kind, False, str(exc), time.monotonic() - started)
        except OSError as exc:  # runtime directory read-only or full: nothing was replaced
            where = f" ({exc.filename})" if exc.filename else ""
            message = f"cannot write the runtime directory{where}: {exc.strerror or exc}"
            return ApplyResult(plan.kind, False, message, time.monotonic() - started)

    def take_pending(self) -> tuple[Rendered, int] | None:
        """The last runtime changes' target and its ticket, for ``write_pending`` (main loop)."""
        target, self.pending = self.pending, None
        if target is None or target.desired is None:
            return None
        return target, self.files.ticket()

    def write_pending(self, target: Rendered, ticket: int, inputs: Inputs) -> str | None:
        """Render and write the config of runtime changes (any thread); the text written, or
        None when a newer write came first. Runtime changes come in streams: their files are
        written without fsync and at most once per batch; a reload's file is durable."""
        assert target.desired is not None
        config = target.config
        if config is None:
            config = render_config(inputs.template, target.desired, inputs.settings)
        return config if self.files.write(config, target.desired, False, ticket) else None

    def flush(self, inputs: Inputs) -> str | None:
        """``take_pending`` and ``write_pending`` at once (at stop)."""
        job = self.take_pending()
        return self.write_pending(*job, inputs) if job is not None else None

    def _save(self, target: Rendered) -> None:
        assert target.config is not None, "a reload's target is rendered"
        self.files.write(target.config, target.desired, durable=True)

    def _start(self, target: Rendered) -> None:
        """No HAProxy runs, so no config serves that a bad one could replace, and the master
        parses its file before binding anything: ``haproxy -c`` first would only add its
        ~70 ms to a gateway's first route. If the start fails, the files are put back as they
        were and ``haproxy -c`` says whether the config is at fault (ValidationFailed)."""
        assert target.config is not None
        files = (self.haproxy.config, self.applied_path)
        before = [read_text(path) for path in files]
        self._save(target)
        try:
            self.haproxy.start()
        except HAProxyError:
            with self.files.exclusive():
                for path, text in zip(files, before, strict=True):
                    if text is None:
                        path.unlink(missing_ok=True)
                    else:
                        atomic_write(path, text)
            self.haproxy.validate(target.config)
            raise
        self.retired.clear()
        self._verify(target)

    def _reload(self, target: Rendered, started: float, kind: PlanKind) -> ApplyResult:
        hp = self.haproxy
        hp.prepare()
        assert target.config is not None, "a reload's target is rendered (pipeline.cycle)"
        self.pending = None  # the reload writes the whole target
        if kind is PlanKind.START or not self.running():
            if not hp.settings.haproxy.manage:
                raise HAProxyError(
                    f"no HAProxy master answers on {hp.master_socket} and haproxy.manage is "
                    "false: start HAProxy with -W -S <that socket> -f " + str(hp.config)
                )
            self._start(target)
            return ApplyResult(PlanKind.START, True, "haproxy started", time.monotonic() - started)
        hp.validate(target.config)  # raises ValidationFailed: nothing replaced
        if hp.config.exists():
            atomic_copy(hp.config, hp.last_good)  # 0600, never half a file
        self._save(target)
        try:
            hp.reload()
            self.retired.clear()  # the new worker has only the servers of the config
            self._verify(target)
        except HAProxyError as exc:
            rolled = self._roll_back()
            return ApplyResult(kind, False, f"{exc}; rolled back: {rolled}",
                               time.monotonic() - started, reloads=1, rolled_back=True)  # fmt: skip
        return ApplyResult(kind, True, "reloaded", time.monotonic() - started, reloads=1)

    def _retire(self, servers: tuple[ServerKey, ...] | list[ServerKey]) -> None:
        """Delete servers already in maintenance; those still carrying connections wait."""
        for bk, name in servers:
            answer = self.haproxy.command(f"del server {bk}/{name}")
            if "Server deleted" in answer or "No such server" in answer:
                self.retired.discard((bk, name))
            else:  # "Server still has connections attached to it": later
                self.retired.add((bk, name))

    def collect(self) -> None:
        """Delete retired servers whose last connection has ended (call every few seconds)."""
        if self.retired:
            self._retire(sorted(self.retired))

    def repair_drift(self, desired: DesiredState, settings: Settings) -> bool:
        """Repair what the runtime API can; True when only a reload can (backends missing)."""
        hp = self.haproxy
        try:
            text, backends = hp.servers_state(), hp.backend_names()
            retired, options = frozenset(self.retired), server_options(settings)
            seen = (servers_state_digest(text), backends, retired, options)
            last = self._clean
            if last is not None and last[1] == seen and (last[0] is desired or last[0] == desired):
                return False  # what was found clean last time, unchanged (no objects built)
            drift = find_drift(parse_servers_state(text), desired, backends, options, retired)
            self._clean = (desired, seen) if not (drift.commands or drift.needs_reload) else None
            if drift.needs_reload:
                log.warning("drift: %s; reloading", drift.needs_reload)
                return True
            if drift.commands:
                errors = hp.runtime(drift.commands)
                log.warning(
                    "drift repaired (%d servers): %s%s",
                    len(drift.differences),
                    "; ".join(drift.differences[:10]),
                    f"; errors: {errors[:3]}" if errors else "",
                )
            self._retire(drift.retire)
        except SidecarError as exc:
            log.warning("drift check failed: %s", exc)
        return False

    def _verify(self, target: Rendered) -> None:
        """The new worker answers and every frontend accepts connections."""
        info = self.haproxy.proc()
        if info is None or info.current_worker is None:
            raise HAProxyError("no current worker after reload")
        # The admin socket is a listener handed over like the others: for a moment after the
        # reload the old worker may still accept on it. Runtime commands must reach the new
        # worker, so wait until it is the one answering.
        deadline = time.monotonic() + self.haproxy.settings.haproxy.reload_timeout
        while self.haproxy.worker_pid() != info.current_worker:
            if time.monotonic() > deadline:
                raise HAProxyError(
                    f"worker {info.current_worker} does not answer on the admin socket"
                )
            time.sleep(0.005)
        if target.desired is not None:
            bind = self.haproxy.settings.gateway.bind
            missing = unbound_ports(bind, target.desired.public_ports)
            if missing:
                raise HAProxyError(f"frontends not listening on ports {missing[:10]}")

    def _roll_back(self) -> str:
        """Put the last good config back and reload it; the failed one is kept for inspection."""
        hp = self.haproxy
        if not hp.last_good.exists():
            return "no last good config"
        with self.files.exclusive():
            atomic_copy(hp.config, hp.dir / "haproxy.cfg.failed")
            atomic_copy(hp.last_good, hp.config)
            self.applied_path.unlink(missing_ok=True)  # the next cycle re-plans from the file
        try:
            hp.reload()
        except HAProxyError as exc:
            return f"reload of the last good config failed too: {exc}"
        return "last good config restored"

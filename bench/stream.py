"""Stream: catalog changes under a continuous background stream, the project against a
consul-template-like baseline, on the same catalog and the same load, in the same run, the
two arms never at the same time (trials interleaved: each kind on each arm in turn).

What is measured. For each trial: t0 is the return of the ``PUT /v1/agent/service/register``
that adds the trial's instance; done is the end of the first TLS call through a gateway (fresh
TCP connection + full handshake with the RFC 3820 proxy as client certificate + the backend's
JSON line) answered by that new instance (its backend process reports its instance name).
A poller process per gateway (the measured arm's) starts polling before the PUT (~1 ms
between attempts) and reports done on CLOCK_MONOTONIC, which every process shares. The figure is done - t0 in ms.
A third process makes Consul's own blocking query on the service's health meanwhile, so that
Consul's share of each trial is known ("PUT -> Consul lists it").

Setup. One Consul dev agent per arm; four base TLS backends and two trial backends
(``bench/tls_backend.py``, child processes); two gateways (``sidecar run --stop-haproxy``):

- project: ``[apply] strategy = "runtime"`` (the default), ``[gateway] bind = "127.0.0.2"``;
- baseline: ``strategy = "reload"`` (every change is render, ``haproxy -c``, reload: the
  consul-template way), ``bind = "127.0.0.3"`` (same ports, another loopback address).

Both use the shipped port map (69 declared frontends), ``backend_networks = ["127.0.0.0/8"]``
(the backends are on loopback), ``keep_vanished_services = false`` (an undeclared trial service
that leaves takes its frontend along, so the gateways keep their size) and DEBUG JSON logs.
Base catalog: 20 declared services of the port map x 2 instances, registered in both agents
before start.

Load, for the whole run: ``--clients`` client processes, each making fresh TLS connections
alternately through the two gateways to random base services that no trial uses, at
``--client-rate`` connections/s each; every outcome is counted per gateway (failures must be 0).

Stream, per rate (``--rates``): a process toggles an extra instance of a random base service at
a fixed rate (registers it if absent, deregisters it if present: at most one extra per
service), in the catalog of the arm being measured only, so that the other arm has nothing
to do (its reloads would take the CPU from the measured one: on two cores, running the
baseline beside the project halves the project's figures). Trials are injected into it, one
at a time, round robin over four kinds, each kind on both arms in turn on the same service
(the order alternating by round); before each trial the stream moves to the measured arm,
and the harness waits ``--gap`` seconds and until the other arm's log shows no apply for
0.25 s:

- new instance: a third instance of a base service (runtime API on the project);
- new port-map service: a declared service of the port map not in the catalog;
- re-add after empty: both instances of a base service are deregistered, the harness waits
  until the gateway rejects on its port, then registers one instance;
- new undeclared service: a service in no map, on its hashed port (a reload on both).

After each trial it is undone (deregistered; for re-add, the two base instances come back) and
the harness waits until the gateway shows the undo (admin socket ``show servers state``, or
the port rejecting / refused). Reloads are counted by each HAProxy master (``show proc``), per
trial and per phase; CPU per arm over the time it was measured.

Design notes (where this departs from the obvious):
- pollers, clients and the stream are processes, not threads: the harness's GIL (5 ms switch
  interval) would otherwise sit between a change and its measurement;
- new instance: before the PUT, one idle TCP connection is held through each gateway on each
  existing server of the service. The balance is leastconn, so the first connection after the
  new server appears goes to it; without that, the poller's sequential connections rotate over
  the 2-3 existing servers and the new one, which adds up to two attempts (an artefact of the
  poller). On the baseline a reload starts a worker without those connections (its figure can
  include up to two attempts, a few % of it). ``--no-pin`` turns this off;
- the clients are paced (10 connections/s each by default): on two cores, unpaced Python TLS
  clients measure the run queue rather than the gateways, and they share the machine with
  two daemons, two HAProxy, Consul, six Python backends and the baseline's reloads.

Start-up: ``--startups`` fresh starts of a project gateway on the base catalog (then stopped),
and the starts of the two measured gateways: from the daemon's start (Popen), its "watching
Consul" log line and its first catalog answer (DEBUG "catalog services") to the first
successful call through it.

Prints tables (start-up; per rate: latency per kind and gateway, baseline/project ratios, the
first connection routed to the new instance (the same without the client's handshake),
where the time goes from the daemons' logs, context); writes one PNG per rate
(``--plot-dir``, default docs/: bench-stream-<rate>.png, CDFs on a log axis) unless
``--no-plot`` or matplotlib is missing, and the raw trials as JSON in the work directory.
Exit status non-zero only when the harness fails.

    .venv/bin/python bench/stream.py [--rates 4,50] [--trials 40] [--seconds 400] [--no-plot]
        [--clients 3] [--client-rate 10] [--startups 3] [--no-baseline] [--no-pin]
        [--set consul.rate_interval=0.05]   # a setting for both gateways, to test a hypothesis

``--trials 15``: about 8 minutes on two busy cores (each trial runs on both arms in turn, the
undo and the arm switch included); the defaults (40) are capped at ``--seconds`` per rate;
``--trials 1`` is a smoke run of a few minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import socket
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from common import (
    FAILURE_KINDS,
    GATEWAY_NAMES,
    ROOT,
    Backend,
    Backends,
    Consul,
    HarnessError,
    Sidecar,
    haproxy_version,
    loadavg,
    machine_line,
    make_pki,
    percentile,
    print_table,
    workdir,
)
from streamlib import (
    ANSWER,
    INSTANCE,
    REFUSED,
    REJECTED,
    ConsulAPI,
    ConsulObserver,
    JsonLog,
    Poller,
    PollResult,
    Service,
    Shared,
    active_ports,
    both,
    client_main,
    fmt,
    fork_context,
    plot_rate,
    ratio,
    stats,
    stream_main,
    wait_gateways,
)

from sidecar import data
from sidecar.core.answers import ProcInfo
from sidecar.core.portmap import hashed_port, load_port_map

PROJECT, BASELINE = "project", "baseline"
GATEWAYS: tuple[str, ...] = (PROJECT, BASELINE)  # --no-baseline: the project alone
BIND = {PROJECT: "127.0.0.2", BASELINE: "127.0.0.3"}
STRATEGY = {PROJECT: "runtime", BASELINE: "reload"}
BASE_SERVICES = 20
BASE_BACKENDS = 4
AUTO_LOW, AUTO_HIGH = 20000, 29999  # [ports] auto_low/auto_high defaults: hashed ports

NEW_INSTANCE = "new instance"
PORT_MAP = "new port-map service"
READD = "re-add after empty"
UNDECLARED = "new undeclared service"
KINDS = (NEW_INSTANCE, PORT_MAP, READD, UNDECLARED)
TARGET_P99 = {NEW_INSTANCE: 25.0, PORT_MAP: 50.0, READD: 50.0, UNDECLARED: 250.0}
MEASURE_TIMEOUT = 30.0  # s: a trial not routed by then counts as "not routed"
STARTUP_TARGET = 300.0  # ms from the daemon finding the catalog to the first route


@dataclass
class Side:
    """One gateway's view of one trial."""

    ms: float | None  # PUT return -> first answer by the new instance; None: not routed
    attempt_ms: float  # duration of the attempt that succeeded
    attempts: int
    reloads_measure: int | None  # master reloads from just before the PUT to the answer
    reloads_trial: int | None  # ... from before the trial's preparation to its undo seen
    applied_ms: float | None = None  # PUT return -> the daemon's "applied" line (log clock)
    services_ms: float | None = None  # PUT return -> the services watch sees the new name
    apply_ms: float | None = None  # the apply's own duration (its log)
    apply_kind: str = ""


@dataclass
class Trial:
    rate: float
    kind: str
    path: str
    sid: str
    wall_t0: float
    sides: dict[str, Side] = field(default_factory=dict)
    needle: str = ""  # what the daemon's "applied" line names for this change
    names: int = 0  # DIRAC services in the catalog once the change is seen (new services)
    undo_s: float = 0.0
    consul_ms: float | None = None  # PUT return -> Consul's health endpoint lists it


# --- set-up helpers ----------------------------------------------------------------------


def bindable(port: int, hosts: Sequence[str]) -> bool:
    """Whether ``port`` can be bound on every address (nothing holds it on 0.0.0.0 either)."""
    for host in hosts:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def consul_name(system: str, service: str) -> str:
    return f"{system}-{service}".lower()


def pick_services() -> tuple[list[Service], list[Service], set[int]]:
    """Base services (every third entry of the shipped port map, 20 of them) and the rest of
    the map (new port-map services), both only where the port is free on both addresses; and
    every declared port (the undeclared trial services must hash elsewhere)."""
    entries = load_port_map(data.path(data.PORT_MAP)).entries
    hosts = tuple(BIND.values())
    declared = {e.gateway_port for e in entries}
    deadline = time.monotonic() + 20.0  # a previous run's HAProxy may still be exiting
    while True:
        usable = [
            Service(
                consul_name(e.system, e.service),
                e.system,
                e.service,
                e.protocol.value,
                e.gateway_port,
            )
            for e in entries
            if bindable(e.gateway_port, hosts)
        ]
        base = usable[::3][:BASE_SERVICES]
        if len(base) >= BASE_SERVICES:
            break
        if time.monotonic() > deadline:
            raise HarnessError(f"only {len(base)} port-map ports are free on {hosts}")
        time.sleep(0.5)
    rest = [s for s in usable if s not in base]
    return base, rest, declared


def undeclared_services(declared: set[int]) -> Iterator[Service]:
    """Fresh services in no map, each on its own hashed port (never reused, never a declared
    port, free on both addresses)."""
    used: set[int] = set()
    for n in itertools.count():
        service = f"Fresh{n:04d}"
        port = hashed_port("Bench", service, AUTO_LOW, AUTO_HIGH)
        if port in declared or port in used or not bindable(port, tuple(BIND.values())):
            continue
        used.add(port)
        yield Service(consul_name("Bench", service), "Bench", service, "dips", port)


def parse_sets(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--set section.key=VALUE`` (VALUE in TOML syntax) as settings sections."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise HarnessError(f"--set {item!r}: expected section.key=VALUE")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word: a string
        out.setdefault(section, {})[name] = value
    return out


def make_gateway(
    directory: Path,
    consul_addr: str,
    which: str,
    pki_ca: Path,
    extra: Mapping[str, Mapping[str, Any]],
) -> Sidecar:
    names = list(GATEWAY_NAMES) if which == PROJECT else list(reversed(GATEWAY_NAMES))
    sections: dict[str, dict[str, Any]] = {
        # Distinct first names: each gateway its own entry in Consul's gateway registry.
        "gateway": {
            "bind": BIND[which],
            "names": names,
            "backend_networks": ["127.0.0.0/8"],
            "keep_vanished_services": False,
        },
        "apply": {"strategy": STRATEGY[which]},
        "log": {"level": "DEBUG", "format": "json", "repeat_limit": 0},
        "certs": {"ca_dir": str(pki_ca)},
    }
    for section, values in extra.items():
        sections.setdefault(section, {}).update(values)
    return Sidecar(directory, consul_addr, sections=sections)


def start_measured(
    sidecar: Sidecar,
    poller: Poller,
    port: int,
    stack: contextlib.ExitStack,
    label: str,
    arm: str,
) -> dict[str, Any]:
    """Start ``sidecar`` while ``poller`` polls ``port``; the start-up figures (ms)."""
    poller.begin(port, ANSWER, None, timeout=90.0)
    t_start = time.time()
    sidecar.start(stack)
    res = poller.result()
    if not res.ok:
        raise HarnessError(f"{label}: port {port} never answered: {sidecar.log_tail()}")
    log = JsonLog(sidecar.log_path)
    watching = log.first("watching Consul")
    catalog = log.first("catalog services:")
    applied = log.first("applied start")

    def ms(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else (b - a) * 1000

    return {
        "gateway": label,
        "arm": arm,
        "start_to_route": ms(t_start, res.wall),
        "watching_to_route": ms(watching.wall if watching else None, res.wall),
        "catalog_to_route": ms(catalog.wall if catalog else None, res.wall),
        "start_to_watching": ms(t_start, watching.wall if watching else None),
        "start_to_applied": ms(t_start, applied.wall if applied else None),
    }


# --- per-process resource figures --------------------------------------------------------


def cpu_seconds(sidecar: Sidecar, master_pid: int | None) -> dict[str, float | None]:
    """CPU seconds so far: the daemon itself, its reaped children (``haproxy -c`` runs) and
    HAProxy (master, its reaped old workers, its live workers); None where unreadable.

    The master is named by its PID, which it keeps across its re-executions, not looked up
    with ``show proc`` each time: under the baseline's reloads (one every ~50 ms at 50/s) the
    master CLI is often gone for all of ``proc()``'s retries, and a window that read 0 at
    its start then counted HAProxy's whole CPU since start (runs 23 to 26: 154-495 % "of one
    core" on a 2-core machine)."""
    out: dict[str, float | None] = {"daemon": None, "validate": None, "haproxy": None}
    try:
        t = psutil.Process(sidecar.pid).cpu_times()
        out["daemon"] = t.user + t.system
        out["validate"] = t.children_user + t.children_system
    except psutil.Error:
        pass
    if master_pid is not None:
        with contextlib.suppress(psutil.Error):
            master = psutil.Process(master_pid)
            t = master.cpu_times()
            total = t.user + t.system + t.children_user + t.children_system
            for child in master.children():
                with contextlib.suppress(psutil.Error):
                    c = child.cpu_times()
                    total += c.user + c.system
            out["haproxy"] = total
    return out


# --- the trials --------------------------------------------------------------------------


class Runner:
    """Runs trials, one arm (gateway) at a time, and keeps the catalogs at their base size.

    Each arm has a Consul agent of its own: the stream and the trial change only the catalog
    of the arm being measured, so the other one has nothing to do meanwhile (its reloads would
    take the CPU from the measured one: on two cores, running the baseline beside the project
    halves the project's figures). Both arms take the same client load all the time.
    """

    def __init__(
        self,
        consuls: dict[str, ConsulAPI],
        shared: Shared,
        pollers: dict[str, Poller],
        gateways: dict[str, Sidecar],
        base: list[Service],
        base_instances: list[list[tuple[str, int]]],
        portmap_pool: list[Service],
        undeclared: Iterator[Service],
        trial_backends: list[Backend],
        gap: float,
        pin: bool,
        observers: dict[str, ConsulObserver],
    ) -> None:
        self.pin = pin
        self.observers = observers
        self.consuls = consuls
        self.shared = shared
        self.pollers = pollers
        self.gateways = gateways
        self.hps = {g: gateways[g].haproxy for g in GATEWAYS}
        self.logs = {g: JsonLog(gateways[g].log_path) for g in GATEWAYS}
        self.base = base
        self.base_instances = base_instances
        self.portmap = itertools.cycle(portmap_pool)
        self.undeclared = undeclared
        self.trial_backends = trial_backends
        self.gap = gap
        self.seq = itertools.count()
        self.next_base = {NEW_INSTANCE: itertools.count(), READD: itertools.count(7)}
        # each arm's HAProxy master, by PID (it keeps it across reloads); read while idle
        self.masters = {g: self._master_pid(g) for g in GATEWAYS}
        # per arm: CPU seconds (daemon, haproxy -c, HAProxy) and wall seconds while measured,
        # and per part the wall seconds of the windows whose both ends it could be read in
        self.cpu: dict[str, dict[str, float]] = {}
        self.cpu_s: dict[str, dict[str, float]] = {}
        self.active_s: dict[str, float] = {}
        self.settle_s: list[float] = []
        self.reset_usage()

    def _master_pid(self, g: str) -> int | None:
        for _ in range(20):
            info = self.hps[g].proc()
            if info is not None:
                return info.master_pid
        return None

    def reset_usage(self) -> None:
        self.cpu = {g: {"daemon": 0.0, "validate": 0.0, "haproxy": 0.0} for g in GATEWAYS}
        self.cpu_s = {g: dict.fromkeys(self.cpu[g], 0.0) for g in GATEWAYS}
        self.active_s = dict.fromkeys(GATEWAYS, 0.0)
        self.settle_s = []

    def pick(self, kind: str) -> tuple[Service, int | None]:
        """The service of one round of ``kind`` (the same for every arm)."""
        if kind in (NEW_INSTANCE, READD):
            k = next(self.next_base[kind]) % len(self.base)
            return self.base[k], k
        if kind == PORT_MAP:
            return next(self.portmap), None
        return next(self.undeclared), None  # fresh on every arm: its catalog never had it

    def _activate(self, g: str) -> None:
        """Point the stream at arm g; wait ``gap`` and until the other arm is quiet (no
        "applied" line in its log for 0.25 s, 10 s at most) before measuring g."""
        gi = GATEWAYS.index(g)
        previous = self.shared.active.value
        start = time.monotonic()
        self.shared.activate(gi)
        time.sleep(self.gap)
        if previous != gi:
            log = self.logs[GATEWAYS[previous]]
            while time.monotonic() - start < 10.0:
                last = next(
                    (x.wall for x in reversed(log.refresh()) if x.message.startswith("applied ")),
                    0.0,
                )
                if time.time() - last > 0.25:
                    break
                time.sleep(0.02)
            self.settle_s.append(time.monotonic() - start)

    def _pin(self, g: str, svc: Service) -> list[socket.socket]:
        """One idle TCP connection through the gateway to each server ``svc`` has.

        The balance is leastconn (the default): with every existing server holding one
        connection, the first connection after the new server appears goes to it. Without
        this, the poller's sequential connections rotate over the 2-3 existing servers and
        the new one, and the first attempt that reaches the new server comes up to two
        attempts after it became routable: an artefact of the poller, not a delay of the
        gateway. (HAProxy connects to the server as soon as it accepts, in TCP mode; the
        backend waits 10 s for a ClientHello, longer than a trial.)
        """
        held: list[socket.socket] = []
        try:
            count = len(active_ports(self.hps[g], svc.backend) or ())
            for _ in range(count):
                held.append(socket.create_connection((BIND[g], svc.port), timeout=5.0))
                time.sleep(0.002)  # HAProxy picks a server for it before the next one
        except OSError:
            _close_all(held)
            raise
        return held

    def _measure(
        self, g: str, svc: Service, sid: str, backend: Backend, pin: bool
    ) -> tuple[float, float, PollResult, int | None, float | None]:
        """Register ``sid`` of ``svc`` on ``backend`` in arm g's catalog while its poller waits
        for its answer and the observer for Consul to list it; (t0 on perf_counter, t0 on the
        wall clock, the poll result, reloads meanwhile, when Consul listed it)."""
        held = self._pin(g, svc) if pin else []
        try:
            before = self.hps[g].proc()
            self.pollers[g].begin(svc.port, INSTANCE, backend.instance, MEASURE_TIMEOUT)
            observing = self.observers[g].begin(svc.name, sid, MEASURE_TIMEOUT)
            self.consuls[g].register(svc, sid, backend.port)
            t0 = time.perf_counter()
            wall_t0 = time.time()
            result = self.pollers[g].result()
            seen = self.observers[g].result() if observing else None
            after = self.hps[g].proc()
        finally:
            _close_all(held)
        return t0, wall_t0, result, _delta(before, after), seen

    def run(self, kind: str, rate: float, g: str, svc: Service, k: int | None) -> Trial:
        self._activate(g)
        gi = GATEWAYS.index(g)
        consul = self.consuls[g]
        cpu0, m0 = cpu_seconds(self.gateways[g], self.masters[g]), time.monotonic()
        n = next(self.seq)
        backend = self.trial_backends[n % len(self.trial_backends)]
        sid = f"t{n}"
        first = self.hps[g].proc()
        if k is not None and self.shared.mark_busy(k, gi) and kind == READD:
            # The stream's extra instance would keep the service from emptying.
            consul.deregister(f"x-{k}")
            self.shared.clear_extra(k, gi)
        if kind == READD:
            assert k is not None
            self.shared.wait_idle(k)  # no client connection in flight on a port we empty
            for old_sid, _ in self.base_instances[k]:
                consul.deregister(old_sid)
            res = self.pollers[g].run(svc.port, REJECTED, 3, 30.0)
            if not res.ok:
                raise HarnessError(f"{g}: {svc.path} still answers after its instances left")
        pin = self.pin and kind == NEW_INSTANCE
        t0, wall_t0, result, reloads, seen = self._measure(g, svc, sid, backend, pin)
        trial = Trial(rate, kind, svc.path, sid, wall_t0)
        trial.consul_ms = None if seen is None else (seen - t0) * 1000
        trial.needle = f"+service {svc.path}:" if kind == UNDECLARED else f"/{sid}-"
        if kind != NEW_INSTANCE:
            trial.names = len(self.base) + (0 if kind == READD else 1)
        undo_start = time.monotonic()
        self._undo(g, kind, svc, sid, backend, k)
        trial.undo_s = time.monotonic() - undo_start
        last = self.hps[g].proc()
        trial.sides[g] = Side(
            ms=(result.done - t0) * 1000 if result.ok else None,
            attempt_ms=(result.done - result.attempt_start) * 1000,
            attempts=result.attempts,
            reloads_measure=reloads,
            reloads_trial=_delta(first, last),
        )
        if k is not None:
            self.shared.unmark(k)
        cpu1, window = cpu_seconds(self.gateways[g], self.masters[g]), time.monotonic() - m0
        for part, value in cpu1.items():
            start = cpu0[part]
            if value is not None and start is not None:
                self.cpu[g][part] += value - start
                self.cpu_s[g][part] += window
        self.active_s[g] += window
        return trial

    def _servers_are(self, g: str, backend: str, want: set[int]) -> Callable[[], bool]:
        return lambda: active_ports(self.hps[g], backend) == want

    def _server_gone(self, g: str, backend: str, port: int) -> Callable[[], bool]:
        def check() -> bool:
            ports = active_ports(self.hps[g], backend)
            return ports is not None and port not in ports

        return check

    def _undo(
        self, g: str, kind: str, svc: Service, sid: str, backend: Backend, k: int | None
    ) -> None:
        """Put arm g's catalog back and wait until its gateway shows it."""
        consul, poller = self.consuls[g], self.pollers[g]
        if kind == READD:
            assert k is not None
            # The base instances first: the service never goes through empty again.
            for old_sid, port in self.base_instances[k]:
                consul.register(svc, old_sid, port)
            consul.deregister(sid)
            want = {port for _, port in self.base_instances[k]}
            wait_gateways(
                [self._servers_are(g, svc.backend, want)],
                60.0,
                f"{svc.path} back to its base instances on {g}",
            )
            return
        consul.deregister(sid)
        if kind == NEW_INSTANCE:
            wait_gateways(
                [self._server_gone(g, svc.backend, backend.port)],
                60.0,
                f"{sid} out of {svc.backend} on {g}",
            )
        elif kind == PORT_MAP:  # declared: stays bound, rejecting
            if not poller.run(svc.port, REJECTED, 3, 60.0).ok:
                raise HarnessError(f"{g}: {svc.path} still answers after {sid} left")
        else:  # undeclared, keep_vanished_services = false: its frontend goes
            if not poller.run(svc.port, REFUSED, 3, 60.0).ok:
                raise HarnessError(f"{g}: {svc.path} port {svc.port} still bound after {sid} left")


def _close_all(socks: Sequence[socket.socket]) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.close()


def _delta(before: ProcInfo | None, after: ProcInfo | None) -> int | None:
    return None if before is None or after is None else after.reloads - before.reloads


def _failed_delta(before: ProcInfo | None, after: ProcInfo | None) -> int | None:
    return None if before is None or after is None else after.failed - before.failed


# --- one rate ----------------------------------------------------------------------------


def run_rate(
    rate: float,
    args: argparse.Namespace,
    runner: Runner,
    shared: Shared,
    consul_addrs: list[str],
    base: list[Service],
    pool: list[Backend],
    gateways: dict[str, Sidecar],
    stack: contextlib.ExitStack,
) -> tuple[list[Trial], dict[str, Any]]:
    ctx = fork_context()
    hps = runner.hps
    runner.reset_usage()
    st0 = {g: gateways[g].status() for g in GATEWAYS}
    proc0 = {g: hps[g].proc() for g in GATEWAYS}
    counts0 = shared.snapshot()
    wall0 = time.time()
    load0 = loadavg()
    stop = ctx.Event()
    out = ctx.Queue()
    stream = ctx.Process(
        target=stream_main,
        args=(
            shared,
            consul_addrs,
            base,
            [b.port for b in pool],
            rate,
            stop,
            out,
            int(rate),
            args.seconds + 60,
        ),
        daemon=True,
    )
    stream.start()
    stack.callback(_kill_all, [stream])
    time.sleep(2.0)  # the stream runs before the first trial
    trials: list[Trial] = []
    deadline = time.monotonic() + args.seconds
    for round_ in range(args.trials):
        if time.monotonic() > deadline:
            break
        # Interleaved: each kind on every arm in turn, the order alternating by round (the
        # machine's drift and any order effect fall on both arms alike).
        arms = GATEWAYS if round_ % 2 == 0 else tuple(reversed(GATEWAYS))
        for kind in KINDS:
            if time.monotonic() > deadline:
                break
            svc, k = runner.pick(kind)
            for g in arms:
                trials.append(runner.run(kind, rate, g, svc, k))
    stop.set()
    stream_report = out.get(timeout=60)
    stream.join(10)
    time.sleep(1.0)  # the stream's last changes and its clean-up reach both gateways
    wall1 = time.time()
    proc1 = {g: hps[g].proc() for g in GATEWAYS}
    st1 = {g: gateways[g].status() for g in GATEWAYS}
    counts1 = shared.snapshot()
    context: dict[str, Any] = {
        "rate": rate,
        "stream": stream_report,
        "seconds": wall1 - wall0,
        "wall": (wall0, wall1),
        "load": (load0, loadavg()),
        "reloads": {g: _delta(proc0[g], proc1[g]) for g in GATEWAYS},
        "failed_reloads": {g: _failed_delta(proc0[g], proc1[g]) for g in GATEWAYS},
        "applies": {
            g: _dict_delta(st0[g].get("applies", {}), st1[g].get("applies", {})) for g in GATEWAYS
        },
        "runtime_changes": {
            g: st1[g].get("runtime_changes", 0) - st0[g].get("runtime_changes", 0) for g in GATEWAYS
        },
        "clients": {g: dict(counts1[i] - counts0[i]) for i, g in enumerate(GATEWAYS)},
        # while the arm was measured (its trials, the stream on its catalog)
        "cpu_pct": {
            g: {
                part: 100 * value / max(1e-9, runner.cpu_s[g][part])
                for part, value in runner.cpu[g].items()
            }
            for g in GATEWAYS
        },
        "active_s": dict(runner.active_s),
        "settle_s": stats(runner.settle_s),
    }
    return trials, context


def _kill_all(procs: Sequence[Any]) -> None:
    """Kill (by PID) the child processes that did not stop by themselves."""
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def _dict_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {
        k: after.get(k, 0) - before.get(k, 0)
        for k in sorted(after)
        if after.get(k, 0) != before.get(k, 0)
    }


def attach_logs(trials: list[Trial], logs: dict[str, JsonLog]) -> None:
    """Each trial's first "applied" line naming its change, per gateway (the log clock has
    millisecond resolution)."""
    for trial in trials:
        for g in trial.sides:
            found = logs[g].applied(trial.wall_t0, trial.needle)
            if found is None:
                continue
            wall, ms, kind = found
            side = trial.sides[g]
            side.applied_ms = (wall - trial.wall_t0) * 1000
            side.apply_ms, side.apply_kind = ms, kind
            if trial.names:
                # The DEBUG line of the services watch that first lists the new name (the
                # stream only adds instances of known services: the count moves only for it).
                seen = logs[g].first(f"catalog services: {trial.names} tagged", trial.wall_t0)
                if seen is not None and seen.wall <= wall:
                    side.services_ms = (seen.wall - trial.wall_t0) * 1000


# --- report ------------------------------------------------------------------------------


def values(trials: list[Trial], kind: str, g: str, attr: str = "ms") -> list[float]:
    out = []
    for t in trials:
        if t.kind == kind and g in t.sides:
            v = getattr(t.sides[g], attr)
            if v is not None:
                out.append(float(v))
    return out


def report_rate(
    trials: list[Trial], ctx: dict[str, Any], verdicts: list[tuple[str, bool | None]]
) -> None:
    rate = ctx["rate"]
    rows = []
    for kind in KINDS:
        for g in GATEWAYS:
            vals = values(trials, kind, g)
            s = stats(vals)
            n_all = sum(1 for t in trials if t.kind == kind and g in t.sides)
            reloads = [t.sides[g].reloads_trial for t in trials if t.kind == kind and g in t.sides]
            reload_sum = sum(r for r in reloads if r is not None)
            target = ""
            met = ""
            if g == PROJECT:
                target = f"p99 <= {TARGET_P99[kind]:g} ms" + (
                    ", 0 reloads" if kind in (PORT_MAP, READD) else ""
                )
                ok: bool | None = None
                if n_all:
                    ok = len(vals) == n_all and s["p99"] <= TARGET_P99[kind]
                    if kind in (PORT_MAP, READD):
                        ok = ok and reload_sum == 0
                met = "-" if ok is None else ("yes" if ok else "NO")
                verdicts.append((f"{rate:g}/s {kind}: {target}", ok))
            rows.append(
                [
                    kind,
                    g,
                    s["n"],
                    fmt(s["p50"]),
                    fmt(s["p90"]),
                    fmt(s["p99"]),
                    fmt(s["max"]),
                    n_all - len(vals),
                    reload_sum,
                    target,
                    met,
                ]
            )
    print_table(
        f"stream {rate:g}/s: PUT return -> first answer by the new instance (ms)",
        [
            "kind",
            "gateway",
            "n",
            "p50",
            "p90",
            "p99",
            "max",
            "not routed",
            "reloads during its trials",
            "target (project)",
            "met",
        ],
        rows,
    )
    if BASELINE in GATEWAYS:
        report_ratios(trials, rate, verdicts)
    report_routed(trials, rate)
    report_where(trials, rate)
    report_context(trials, ctx)
    for g in GATEWAYS:
        failed = sum(v for k, v in ctx["clients"][g].items() if k != "ok")
        verdicts.append((f"{rate:g}/s {g}: 0 failed client connections", failed == 0))


def report_ratios(
    trials: list[Trial], rate: float, verdicts: list[tuple[str, bool | None]]
) -> None:
    ratio_rows = []
    for kind in KINDS:
        p, b = stats(values(trials, kind, PROJECT)), stats(values(trials, kind, BASELINE))
        goal = ""
        if kind == NEW_INSTANCE:
            ok = p["n"] > 0 and b["p99"] >= 10 * p["p99"]
            goal = "p99 ratio >= 10x: " + ("yes" if ok else "NO")
            verdicts.append((f"{rate:g}/s new instance: baseline p99 >= 10x project p99", ok))
        ratio_rows.append(
            [
                kind,
                ratio(b["p50"], p["p50"]),
                ratio(b["p99"], p["p99"]),
                ratio(b["max"], p["max"]),
                goal,
            ]
        )
    print_table(
        f"stream {rate:g}/s: baseline / project",
        ["kind", "p50 ratio", "p99 ratio", "max ratio", "goal"],
        ratio_rows,
    )


def routed(trials: list[Trial], kind: str, g: str) -> list[float]:
    """PUT return -> the start of the attempt that reached the new instance: when HAProxy first
    routed a connection to it, to within the poller's period (~1-2 ms: a refused attempt and
    a 1 ms sleep). The end-to-end figure minus the successful handshake."""
    return [
        side.ms - side.attempt_ms
        for t in trials
        if t.kind == kind and g in t.sides and (side := t.sides[g]).ms is not None
    ]


def report_routed(trials: list[Trial], rate: float) -> None:
    rows = []
    for kind in KINDS:
        p = stats(routed(trials, kind, PROJECT))
        row = [kind, f"{fmt(p['p50'])} / {fmt(p['p99'])}"]
        if BASELINE in GATEWAYS:
            b = stats(routed(trials, kind, BASELINE))
            row += [f"{fmt(b['p50'])} / {fmt(b['p99'])}", ratio(b["p99"], p["p99"])]
        rows.append(row)
    head = ["kind", "project p50 / p99"]
    if BASELINE in GATEWAYS:
        head += ["baseline p50 / p99", "p99 ratio"]
    print_table(
        f"stream {rate:g}/s: PUT return -> first connection routed to the new instance (ms; the "
        "successful attempt's start: the figure without the client's own handshake)",
        head,
        rows,
    )


def report_where(trials: list[Trial], rate: float) -> None:
    where = []
    for kind in KINDS:
        for g in GATEWAYS:
            consul_seen = stats(
                [
                    t.consul_ms
                    for t in trials
                    if t.kind == kind and g in t.sides and t.consul_ms is not None
                ]
            )
            services = stats(values(trials, kind, g, "services_ms"))
            started = stats(
                [
                    applied_ms - apply_ms
                    for t in trials
                    if t.kind == kind
                    and g in t.sides
                    and (applied_ms := t.sides[g].applied_ms) is not None
                    and (apply_ms := t.sides[g].apply_ms) is not None
                ]
            )
            applied = stats(values(trials, kind, g, "applied_ms"))
            apply_ = stats(values(trials, kind, g, "apply_ms"))
            attempt = stats(values(trials, kind, g, "attempt_ms"))
            attempts = stats(values(trials, kind, g, "attempts"))
            kinds = Counter(
                t.sides[g].apply_kind
                for t in trials
                if t.kind == kind and g in t.sides and t.sides[g].apply_kind
            )
            where.append(
                [
                    kind,
                    g,
                    f"{fmt(consul_seen['p50'])} / {fmt(consul_seen['p99'])}",
                    f"{fmt(services['p50'])} / {fmt(services['p99'])}" if services["n"] else "-",
                    f"{fmt(started['p50'])} / {fmt(started['p99'])}",
                    f"{fmt(applied['p50'])} / {fmt(applied['p99'])}",
                    f"{fmt(apply_['p50'])} / {fmt(apply_['p99'])}",
                    f"{fmt(attempt['p50'])} / {fmt(attempt['p99'])}",
                    f"{attempts['p50']:.0f} / {attempts['p99']:.0f}" if attempts["n"] else "-",
                    ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "-",
                ]
            )
    print_table(
        f"stream {rate:g}/s: where the time goes (p50 / p99, ms; the daemon's log clock has ms resolution)",
        [
            "kind",
            "gateway",
            "PUT -> Consul lists it (own blocking query)",
            "PUT -> services watch lists it",
            "PUT -> apply starts",
            "PUT -> apply logged (its end)",
            "apply itself",
            "successful attempt",
            "attempts",
            "applies naming it",
        ],
        where,
    )


def report_context(trials: list[Trial], ctx: dict[str, Any]) -> None:
    rate = ctx["rate"]
    st = ctx["stream"]
    counts = st["counts"]
    made = counts.get("register", 0) + counts.get("deregister", 0)
    rows: list[list[Any]] = [
        ["phase duration (s)", f"{ctx['seconds']:.0f}", ""],
        [
            "stream changes: register / deregister / errors",
            f"{counts.get('register', 0)} / {counts.get('deregister', 0)} / {counts.get('error', 0)}",
            "",
        ],
        ["stream rate achieved (changes/s)", f"{made / max(1e-9, st['elapsed']):.1f}", f"{rate:g}"],
        [
            "stream lateness p99 / max (ms)",
            f"{st['late_p99_ms']:.1f} / {st['late_max_ms']:.1f}",
            "",
        ],
        [
            "stream stalls > 1 s (changes skipped: the schedule resumed)",
            f"{counts.get('stall', 0)} ({st.get('skipped', 0)})",
            "0",
        ],
        ["trials (all kinds)", len(trials), ""],
    ]
    for g in GATEWAYS:
        c = ctx["clients"][g]
        failed = sum(v for k, v in c.items() if k != "ok")
        detail = ", ".join(f"{k} {c.get(k, 0)}" for k in FAILURE_KINDS if c.get(k, 0))
        rows += [
            [
                f"{g}: HAProxy master reloads (show proc) / failed",
                f"{ctx['reloads'][g]} / {ctx['failed_reloads'][g]}",
                "0 on the project outside undeclared trials" if g == PROJECT else "",
            ],
            [f"{g}: applies by kind (status.json)", json.dumps(ctx["applies"][g]), ""],
            [f"{g}: runtime API commands (status.json)", ctx["runtime_changes"][g], ""],
            [
                f"{g}: client connections ok / failed",
                f"{c.get('ok', 0)} / {failed}" + (f" ({detail})" if detail else ""),
                "0 failed",
            ],
            [
                f"{g}: CPU % of one core while measured ({ctx['active_s'][g]:.0f} s): daemon / haproxy -c / HAProxy",
                " / ".join(
                    f"{ctx['cpu_pct'][g][p]:.0f}" for p in ("daemon", "validate", "haproxy")
                ),
                "",
            ],
        ]
    undeclared = sum(
        t.sides[PROJECT].reloads_trial or 0
        for t in trials
        if t.kind == UNDECLARED and PROJECT in t.sides
    )
    total = ctx["reloads"][PROJECT]
    rows.append(
        [
            "project: reloads outside the undeclared trials",
            "?" if total is None else total - undeclared,
            "0",
        ]
    )
    settle = ctx["settle_s"]
    if settle["n"]:
        rows.append(
            [
                "arm switch: stream moved -> other arm quiet (s, p50 / max)",
                f"{settle['p50']:.2f} / {settle['max']:.2f}",
                "",
            ]
        )
    rows.append(["load average (start / end)", " / ".join(ctx["load"]), ""])
    print_table(f"stream {rate:g}/s: context", ["figure", "value", "target"], rows)


def reloads_logged(log: JsonLog) -> list[tuple[float, float]]:
    """(start, end) wall times of every reload the daemon logged ("applied reload in N ms")."""
    out = []
    for line in log.refresh():
        if line.message.startswith(("applied reload in ", "applied start in ")):
            ms = float(line.message.split(" in ", 1)[1].split(" ms", 1)[0])
            out.append((line.wall - ms / 1000, line.wall))
    return out


def report_failures(
    samples: list[tuple[float, str, int, str, str]],
    windows: dict[str, list[tuple[float, float]]],
    slack: float = 0.5,
) -> None:
    """The failed client connections kept (the first 50 per client), and how many fell into
    a reload of their gateway (from its start to ``slack`` s after the daemon logged it)."""

    def in_reload(stamp: float, host: str) -> bool:
        return any(a - 0.05 <= stamp <= b + slack for a, b in windows.get(host, ()))

    print("\nfailed client connections kept (per gateway: during a reload of it / all):")
    for host in sorted({s[1] for s in samples}):
        mine = [s for s in samples if s[1] == host]
        during = sum(1 for s in mine if in_reload(s[0], host))
        print(f"  {host}: {during} / {len(mine)}")
    print("first ones (time, gateway, port, kind, message, R = during a reload of that gateway):")
    for stamp, host, port, kind, msg in sorted(samples)[:20]:
        mark = "R" if in_reload(stamp, host) else "-"
        clock = time.strftime("%H:%M:%S", time.gmtime(stamp))
        print(f"  {clock}.{int(stamp % 1 * 1000):03d}Z {host} {port} {kind} {mark} {msg}")


def report_startup(starts: list[dict[str, Any]], verdicts: list[tuple[str, bool | None]]) -> None:
    rows = []
    for s in starts:
        rows.append(
            [
                s["gateway"],
                fmt(s["start_to_route"] or float("nan")),
                fmt(s["start_to_watching"] or float("nan")),
                fmt(s["watching_to_route"] or float("nan")),
                fmt(s["catalog_to_route"] or float("nan")),
                fmt(s["start_to_applied"] or float("nan")),
            ]
        )
    print_table(
        "start-up on the base catalog (ms; log clock: ms resolution)",
        [
            "gateway",
            "daemon start -> first route",
            "start -> 'watching Consul'",
            "'watching Consul' -> first route",
            "first catalog answer -> first route",
            "start -> 'applied start'",
        ],
        rows,
    )
    from_catalog = [
        s["catalog_to_route"]
        for s in starts
        if s["catalog_to_route"] is not None and s.get("arm") == PROJECT
    ]
    verdicts.append(
        (
            f"start-up: first route <= {STARTUP_TARGET:g} ms after the first catalog answer (max of {len(from_catalog)})",
            bool(from_catalog) and max(from_catalog) <= STARTUP_TARGET,
        )
    )


def report_summary(trials_by_rate: dict[float, list[Trial]], starts: list[dict[str, Any]]) -> None:
    """One table: per rate and kind, project and baseline p50 / p99 and their ratios; then
    start-up (median over the starts of each arm)."""
    rows: list[list[Any]] = []
    for rate, trials in trials_by_rate.items():
        for kind in KINDS:
            p, b = stats(values(trials, kind, PROJECT)), stats(values(trials, kind, BASELINE))
            rows.append(
                [
                    f"{rate:g}/s",
                    kind,
                    f"{p['n']} / {b['n']}",
                    f"{fmt(p['p50'])} / {fmt(p['p99'])}",
                    f"{fmt(b['p50'])} / {fmt(b['p99'])}",
                    ratio(b["p50"], p["p50"]),
                    ratio(b["p99"], p["p99"]),
                    f"{TARGET_P99[kind]:g}",
                    "-" if not p["n"] else ("yes" if p["p99"] <= TARGET_P99[kind] else "NO"),
                ]
            )
    for what, key in (
        ("first catalog answer -> first route", "catalog_to_route"),
        ("daemon start -> first route", "start_to_route"),
        ("daemon start -> 'watching Consul'", "start_to_watching"),
    ):
        got = {
            g: [s[key] for s in starts if s.get("arm") == g and s[key] is not None]
            for g in (PROJECT, BASELINE)
        }
        p50 = {g: percentile(v, 50) if v else float("nan") for g, v in got.items()}
        worst = {g: max(v) if v else float("nan") for g, v in got.items()}
        target = f"{STARTUP_TARGET:g}" if key == "catalog_to_route" else ""
        met = ""
        if target and got[PROJECT]:
            met = "yes" if worst[PROJECT] <= STARTUP_TARGET else "NO"
        rows.append(
            [
                "start-up",
                f"{what} (median / max)",
                f"{len(got[PROJECT])} / {len(got[BASELINE])}",
                f"{fmt(p50[PROJECT])} / {fmt(worst[PROJECT])}",
                f"{fmt(p50[BASELINE])} / {fmt(worst[BASELINE])}",
                ratio(p50[BASELINE], p50[PROJECT]),
                ratio(worst[BASELINE], worst[PROJECT]),
                target,
                met,
            ]
        )
    print_table(
        "summary: PUT return -> first answer by the new instance, project vs baseline (ms; ratio = baseline / project)",
        [
            "rate",
            "kind",
            "n (project / baseline)",
            "project p50 / p99",
            "baseline p50 / p99",
            "p50 ratio",
            "p99 ratio",
            "target p99 (project)",
            "met",
        ],
        rows,
    )


def plots(trials_by_rate: dict[float, list[Trial]], directory: Path) -> list[Path]:
    written = []
    for rate, trials in trials_by_rate.items():
        path = directory / f"bench-stream-{rate:g}.png"
        panels = []
        for kind in KINDS:
            p, b = values(trials, kind, PROJECT), values(trials, kind, BASELINE)
            label = f"{kind}\np99 {fmt(stats(p)['p99'])} vs {fmt(stats(b)['p99'])} ms ({ratio(stats(b)['p99'], stats(p)['p99'])})"
            panels.append((label, TARGET_P99[kind], p, b))
        title = f"bench/stream.py: catalog change -> first answer by the new instance, background stream {rate:g} changes/s"
        if plot_rate(path, title, panels):
            written.append(path)
    return written


# --- main --------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="4,50", help="background stream rates, changes/s")
    parser.add_argument("--trials", type=int, default=40, help="trials per kind per rate")
    parser.add_argument(
        "--seconds", type=float, default=400.0, help="cap on each rate's trials (s)"
    )
    parser.add_argument(
        "--gap",
        type=float,
        default=0.3,
        help="before each trial: the stream on the measured arm's catalog alone (s)",
    )
    parser.add_argument("--clients", type=int, default=3, help="client processes")
    parser.add_argument(
        "--client-rate", type=float, default=10.0, help="connections/s per client (0: back to back)"
    )
    parser.add_argument("--startups", type=int, default=3, help="extra fresh starts measured")
    parser.add_argument("--poll-sleep", type=float, default=0.001, help="between poll attempts (s)")
    parser.add_argument(
        "--no-fast-miss",
        dest="fast_miss",
        action="store_false",
        help="measuring attempts send the gateway's name: one on an old server is a whole "
        "handshake (see tls_backend.probe_name)",
    )
    parser.add_argument("--plot-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--no-plot", dest="plot", action="store_false")
    parser.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="run the project gateway alone (no ratios): how much the baseline's reloads cost it",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a setting for both gateways (TOML value), e.g. consul.rate_interval=0.01",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="new instance: do not hold a connection on each existing server (see Runner._pin)",
    )
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    extra = parse_sets(args.set)
    global GATEWAYS
    if not args.baseline:
        GATEWAYS = (PROJECT,)

    print(f"# stream  {machine_line()}")
    print(f"# {haproxy_version()}; Python {platform.python_version()}")
    print(f"# gateways: {', '.join(f'{g} ({STRATEGY[g]}, {BIND[g]})' for g in GATEWAYS)}")
    if extra:
        print(f"# settings given to both gateways (--set): {json.dumps(extra)}")
    base_dir = workdir("bench-stream-")
    verdicts: list[tuple[str, bool | None]] = []
    starts: list[dict[str, Any]] = []
    trials_by_rate: dict[float, list[Trial]] = {}
    contexts: dict[float, dict[str, Any]] = {}
    samples: list[tuple[float, str, int, str, str]] = []
    ctx = fork_context()
    with contextlib.ExitStack() as stack:
        pki = make_pki(base_dir / "pki")
        base, portmap_pool, declared = pick_services()
        shared = Shared(ctx, len(base), len(GATEWAYS))
        # Pollers fork now, before this process has any thread.
        pollers = {
            g: Poller(ctx, pki, BIND[g], args.poll_sleep, args.fast_miss).start(stack)
            for g in GATEWAYS
        }
        # One Consul agent per arm: the stream and the trials change only the catalog of the
        # arm being measured (see Runner).
        consuls = {g: Consul(base_dir / f"consul-{g}").start(stack) for g in GATEWAYS}
        print(f"# {consuls[PROJECT].version()} (one dev agent per arm); workdir {base_dir}")
        observers = {g: ConsulObserver(ctx, consuls[g].addr).start(stack) for g in GATEWAYS}
        apis = {g: ConsulAPI(consuls[g].addr) for g in GATEWAYS}
        for api in apis.values():
            stack.callback(api.close)
        pool = Backends(pki, base_dir).start(stack, BASE_BACKENDS, prefix="be")
        trial_backends = Backends(pki, base_dir).start(stack, 2, prefix="trial")
        base_instances: list[list[tuple[str, int]]] = []
        for k, svc in enumerate(base):
            instances = [(f"b{k}-{j}", pool[(2 * k + j) % len(pool)].port) for j in range(2)]
            for sid, port in instances:
                for api in apis.values():
                    api.register(svc, sid, port)
            base_instances.append(instances)

        # -- start-up: fresh starts, the arms in turn, then the two measured gateways --------
        for r in range(args.startups):
            for g in GATEWAYS:
                sc = make_gateway(base_dir / f"fresh-{g}{r}", consuls[g].addr, g, pki.ca_dir, extra)
                with contextlib.ExitStack() as one:
                    starts.append(
                        start_measured(
                            sc, pollers[g], base[0].port, one, f"{g}, fresh start {r + 1}", g
                        )
                    )
                time.sleep(0.5)
        gateways: dict[str, Sidecar] = {}
        for g in GATEWAYS:
            gateways[g] = make_gateway(base_dir / g, consuls[g].addr, g, pki.ca_dir, extra)
            starts.append(
                start_measured(
                    gateways[g], pollers[g], base[0].port, stack, f"{g} (measured gateway)", g
                )
            )
        hps = {g: gateways[g].haproxy for g in GATEWAYS}
        for g in GATEWAYS:
            gateways[g].wait_idle()  # the first certificate probe of every backend is over
        for svc in base:
            for res in both(list(pollers.values()), svc.port, ANSWER, None, 10.0):
                if not res.ok:
                    raise HarnessError(f"{svc.path} does not answer on port {svc.port}")

        # -- load ---------------------------------------------------------------------------
        stop_clients = ctx.Event()
        client_out = ctx.Queue()
        hosts = [BIND[g] for g in GATEWAYS]
        clients = [
            ctx.Process(
                target=client_main,
                args=(
                    shared,
                    pki,
                    hosts,
                    [s.port for s in base],
                    args.client_rate,
                    stop_clients,
                    client_out,
                    100 + i,
                    len(rates) * (args.seconds + 120) + 120,
                ),
                daemon=True,
            )
            for i in range(args.clients)
        ]
        for c in clients:
            c.start()
        stack.callback(_kill_all, clients)
        time.sleep(2.0)  # clients warm up

        runner = Runner(
            apis,
            shared,
            pollers,
            gateways,
            base,
            base_instances,
            portmap_pool,
            undeclared_services(declared),
            trial_backends,
            args.gap,
            args.pin,
            observers,
        )
        for rate in rates:
            trials, context = run_rate(
                rate,
                args,
                runner,
                shared,
                [consuls[g].addr for g in GATEWAYS],
                base,
                pool,
                gateways,
                stack,
            )
            trials_by_rate[rate] = trials
            contexts[rate] = context
        stop_clients.set()
        for _ in clients:
            samples += client_out.get(timeout=30)
        for c in clients:
            c.join(10)
        logs = {g: JsonLog(gateways[g].log_path) for g in GATEWAYS}
        for trials in trials_by_rate.values():
            attach_logs(trials, logs)
        old_workers = {g: (info.old_workers if (info := hps[g].proc()) else None) for g in GATEWAYS}
        reload_windows = {BIND[g]: reloads_logged(logs[g]) for g in GATEWAYS}

    # -- report -----------------------------------------------------------------------------
    print(
        f"\n# {os.cpu_count()} CPUs; clients: {args.clients} processes x {args.client_rate:g} conn/s; trials per kind per rate: {args.trials} (cap {args.seconds:g} s per rate)"
    )
    report_startup(starts, verdicts)
    for rate in rates:
        report_rate(trials_by_rate[rate], contexts[rate], verdicts)
    if BASELINE in GATEWAYS:
        report_summary(trials_by_rate, starts)
    if samples:
        report_failures(samples, reload_windows)
    print(f"\nold HAProxy workers at the end: {old_workers}")
    raw = base_dir / "stream-results.json"
    raw.write_text(
        json.dumps(
            {
                "starts": starts,
                "trials": [asdict(t) for ts in trials_by_rate.values() for t in ts],
                "contexts": {str(r): c for r, c in contexts.items()},
                "failed_client_connections": samples,
            },
            indent=1,
        )
    )
    print(f"raw trials: {raw}")
    if args.plot:
        written = plots(trials_by_rate, args.plot_dir)
        print(
            "plots: "
            + (", ".join(str(p) for p in written) if written else "none (matplotlib missing)")
        )
    print("\n## targets")
    for what, ok in verdicts:
        print(f"- {what}: {'-' if ok is None else ('met' if ok else 'MISSED')}")
    print(f"# end  {machine_line()}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as exc:
        print(f"harness failure: {exc}", file=sys.stderr)
        sys.exit(2)

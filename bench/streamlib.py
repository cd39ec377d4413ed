"""Helpers of ``bench/stream.py``: the processes that load, stream and measure, the shared
state they coordinate through, log parsing, summaries and plots.

Every long-running part is a child process (forked, so plain Python objects pass as
arguments): the harness's own GIL must not sit between a catalog change and its measurement.
A 5 ms GIL switch interval would be a fifth of the 25 ms target.

- :class:`Shared`: fixed-size shared memory (flags and counters per base service) and two
  locks, created before any fork.
- :func:`client_main`: one client process; fresh TLS connections through both gateways to
  random base services that no trial is using, outcomes counted per gateway and kind.
- :func:`stream_main`: the background stream; toggles an extra instance of a random base
  service at a fixed rate, in the catalog of the arm being measured (``Shared.active``).
- :class:`Poller`: one persistent process per gateway that polls a port until a condition
  holds (answered by a given instance, any answer, refused, rejected) and reports when.
- :func:`active_ports`: the servers a gateway routes to for one backend (admin socket).
- :class:`JsonLog`: the daemon's JSON log lines with their wall times.
- :func:`stats`, :func:`fmt`, :func:`plot_rate`: summaries and the PNG (matplotlib optional).
"""

from __future__ import annotations

import calendar
import contextlib
import json
import multiprocessing as mp
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import ForkContext, ForkProcess
from pathlib import Path
from typing import Any

import requests
from common import (
    FAILURE_KINDS,
    SERVER_NAME,
    TAG,
    HarnessError,
    client_ctx,
    percentile,
    probe_ctx,
    probe_name,
    tls_call,
)

from devkit.pki import DevPKI
from sidecar.base.errors import SidecarError
from sidecar.core.answers import parse_servers_state
from sidecar.core.model import ServerState
from sidecar.haproxy.process import HAProxy

OUTCOMES = ("ok", *FAILURE_KINDS)
MAX_SAMPLES = 50  # failed client connections kept with their message, per client


@dataclass(frozen=True)
class Service:
    """A DIRAC service as the harness registers it: Consul name, DIRAC path, public port."""

    name: str
    system: str
    service: str
    protocol: str
    port: int

    @property
    def path(self) -> str:
        return f"{self.system}/{self.service}"

    @property
    def backend(self) -> str:
        """The HAProxy backend name (``sidecar.core.plan.backend_id``)."""
        return f"bk_{self.system}_{self.service}"


# --- Consul, from any process ------------------------------------------------------------


class ConsulAPI:
    """Agent API calls on a session of this process's own (a requests.Session is not shared
    across processes or threads)."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.session = requests.Session()

    def register(self, svc: Service, sid: str, port: int) -> None:
        body = {
            "Name": svc.name,
            "ID": sid,
            "Address": "127.0.0.1",
            "Port": port,
            "Tags": [TAG],
            # dirac_protocol as the port map says: an instance disagreeing with the map's
            # protocol changes the backend's structure (a reload), which is not what the
            # trials are about.
            "Meta": {
                "dirac_system": svc.system,
                "dirac_service": svc.service,
                "dirac_protocol": svc.protocol,
            },
            "Check": {
                "CheckID": f"service:{sid}",
                "Name": f"{svc.name} TTL",
                "TTL": "1h",
                "Status": "passing",
            },
        }
        self._put("/v1/agent/service/register", body)

    def deregister(self, sid: str) -> None:
        self._put(f"/v1/agent/service/deregister/{sid}")

    def _put(self, path: str, body: Any = None) -> None:
        resp = self.session.put(f"{self.addr}{path}", json=body, timeout=10)
        if resp.status_code != 200:
            raise HarnessError(f"PUT {path}: HTTP {resp.status_code} {resp.text[:200]}")

    def close(self) -> None:
        self.session.close()


# --- shared state ------------------------------------------------------------------------


class Shared:
    """State shared by the driver, the clients and the stream (fork-inherited memory).

    ``busy[k]``: a trial uses base service k; clients and the stream leave it alone.
    ``inflight[k]``: client connections to k in progress (the driver waits for 0 before it
    empties k, so that no client is counted failing on a port the harness emptied itself).
    ``extra[g * services + k]``: the stream's extra instance of k is registered in arm g's
    catalog (each arm, project and baseline, has a Consul agent of its own).
    ``active``: the arm whose catalog the stream changes (the one being measured).
    ``counts``: client outcomes, gateway-major (``OUTCOMES`` per gateway).
    ``lock`` guards busy/inflight/counts (taken by clients around each call, briefly);
    ``stream_lock`` guards busy/extra and is held by the stream across its PUT, so that once
    the driver holds it a service is out of the stream's reach.
    """

    def __init__(self, ctx: ForkContext, services: int, gateways: int) -> None:
        self.services = services
        self.lock = ctx.Lock()
        self.stream_lock = ctx.Lock()
        self.busy = ctx.RawArray("b", services)
        self.inflight = ctx.RawArray("i", services)
        self.extra = ctx.RawArray("b", services * gateways)
        self.active = ctx.RawValue("i", 0)
        self.counts = ctx.RawArray("q", gateways * len(OUTCOMES))
        self.gateways = gateways

    def snapshot(self) -> list[Counter[str]]:
        """Client outcomes so far, one Counter per gateway."""
        with self.lock:
            raw = list(self.counts)
        n = len(OUTCOMES)
        return [
            Counter({o: raw[g * n + i] for i, o in enumerate(OUTCOMES)})
            for g in range(self.gateways)
        ]

    def claim(self, rng: random.Random) -> int | None:
        """A random base service no trial uses, counted in flight (None: all busy)."""
        with self.lock:
            free = [k for k in range(self.services) if not self.busy[k]]
            if not free:
                return None
            k = rng.choice(free)
            self.inflight[k] += 1
            return k

    def release(self, k: int, gateway: int, outcome: str) -> None:
        with self.lock:
            self.inflight[k] -= 1
            self.counts[gateway * len(OUTCOMES) + OUTCOMES.index(outcome)] += 1

    def mark_busy(self, k: int, g: int = 0) -> bool:
        """Take k away from the stream and the clients; returns whether the stream's extra
        instance of k is registered in arm g's catalog (the caller may then deregister it: the
        stream will not touch k until :meth:`unmark`)."""
        with self.stream_lock, self.lock:
            self.busy[k] = 1
            return bool(self.extra[g * self.services + k])

    def clear_extra(self, k: int, g: int = 0) -> None:
        with self.stream_lock:
            self.extra[g * self.services + k] = 0

    def activate(self, g: int) -> None:
        """From now on the stream changes arm g's catalog."""
        with self.stream_lock:
            self.active.value = g

    def wait_idle(self, k: int, timeout: float = 15.0) -> None:
        """Wait until no client connection to k is in flight."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if self.inflight[k] == 0:
                    return
            if time.monotonic() > deadline:
                raise HarnessError(f"client connections to service {k} still in flight")
            time.sleep(0.002)

    def unmark(self, k: int) -> None:
        with self.stream_lock, self.lock:
            self.busy[k] = 0


# --- clients -----------------------------------------------------------------------------


def client_main(
    shared: Shared,
    pki: DevPKI,
    hosts: Sequence[str],
    ports: Sequence[int],
    rate: float,
    stop: Any,
    out: Any,
    seed: int,
    max_seconds: float,
) -> None:
    """One client process: fresh TLS connections (proxy certificate, hostname check), each
    through the next gateway in turn (``hosts``) to a random base service (``ports``) that no
    trial uses, at ``rate`` connections per second in all (0: back to back). Outcomes go to
    ``shared.counts``; the first failures, with their message, to ``out`` at the end."""
    ctx = client_ctx(pki)
    rng = random.Random(seed)
    samples: list[tuple[float, str, int, str, str]] = []
    started = time.monotonic()
    deadline = started + max_seconds
    i = 0
    while not stop.is_set() and time.monotonic() < deadline:
        gateway = i % len(hosts)
        i += 1
        k = shared.claim(rng)
        if k is None:
            time.sleep(0.01)
            continue
        kind, _, message = tls_call(ctx, ports[k], timeout=5.0, host=hosts[gateway])
        shared.release(k, gateway, kind)
        if kind != "ok" and len(samples) < MAX_SAMPLES:
            samples.append((time.time(), hosts[gateway], ports[k], kind, message[:160]))
        if rate > 0:
            # Fixed schedule; after a stall, at most one second of calls is caught up.
            due = started + i / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            elif now - due > 1.0:
                started = now - i / rate
    out.put(samples)


# --- the background stream ---------------------------------------------------------------


def stream_main(
    shared: Shared,
    consul_addrs: Sequence[str],
    services: Sequence[Service],
    backend_ports: Sequence[int],
    rate: float,
    stop: Any,
    out: Any,
    seed: int,
    max_seconds: float,
) -> None:
    """The background stream: ``rate`` catalog changes per second on a fixed schedule, each
    toggling the extra instance ``x-<k>`` of a random base service k that no trial uses
    (registered if absent, deregistered if present; so registrations and deregistrations
    alternate on average and at most one extra per service exists), in the catalog of the arm
    being measured (``consul_addrs[shared.active]``). Stops on ``stop`` or after
    ``max_seconds``, then deregisters the extras it left. Reports counts and lateness."""
    apis = [ConsulAPI(addr) for addr in consul_addrs]
    n = shared.services
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    lateness: list[float] = []
    errors: list[str] = []
    start = time.monotonic()
    deadline = start + max_seconds
    i = skipped = 0
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            due = start + i / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            late = max(0.0, time.monotonic() - due)
            lateness.append(late)
            if late > 1.0:
                # Stalled (a starved machine): the schedule resumes from now; the backlog is
                # skipped, not made at full speed.
                counts["stall"] += 1
                skipped += int(late * rate)
                start += late
            i += 1
            with shared.stream_lock:
                free = [k for k in range(shared.services) if not shared.busy[k]]
                if not free:
                    continue
                k = rng.choice(free)
                sid = f"x-{k}"
                g = shared.active.value
                api = apis[g]
                try:
                    if shared.extra[g * n + k]:
                        api.deregister(sid)
                        shared.extra[g * n + k] = 0
                        counts["deregister"] += 1
                    else:
                        api.register(services[k], sid, rng.choice(backend_ports))
                        shared.extra[g * n + k] = 1
                        counts["register"] += 1
                except (HarnessError, requests.RequestException) as exc:
                    counts["error"] += 1
                    if len(errors) < 5:
                        errors.append(str(exc)[:200])
        elapsed = time.monotonic() - start
        with shared.stream_lock:
            for g, api in enumerate(apis):
                for k in range(n):
                    if shared.extra[g * n + k] and not shared.busy[k]:
                        with contextlib.suppress(HarnessError, requests.RequestException):
                            api.deregister(f"x-{k}")
                            shared.extra[g * n + k] = 0
    finally:
        for api in apis:
            api.close()
    out.put(
        {
            "counts": dict(counts),
            "elapsed": elapsed,
            "ticks": i,
            "skipped": skipped,
            "late_p99_ms": percentile(lateness, 99) * 1000 if lateness else 0.0,
            "late_max_ms": max(lateness, default=0.0) * 1000,
            "errors": errors,
        }
    )


# --- pollers -----------------------------------------------------------------------------

# Poll modes: what ends a poll.
INSTANCE = "instance"  # an answer from the instance named ``arg``
ANSWER = "answer"  # any answer
REFUSED = "refused"  # ``arg`` consecutive refused connections (the port is not bound)
REJECTED = "rejected"  # ``arg`` consecutive failures of any kind (bound, no usable server)


@dataclass
class PollResult:
    ok: bool
    done: float  # perf_counter (CLOCK_MONOTONIC: the same clock in every process)
    wall: float  # time.time() at the same moment, for the daemon's log
    attempt_start: float  # perf_counter at the start of the attempt that succeeded
    attempts: int
    kinds: dict[str, int] = field(default_factory=dict)


def _poll(
    ctx: Any,
    host: str,
    port: int,
    mode: str,
    arg: Any,
    timeout: float,
    sleep: float,
    fast_miss: bool = True,
) -> PollResult:
    deadline = time.perf_counter() + timeout
    attempts, streak = 0, 0
    name = probe_name(arg) if mode == INSTANCE and fast_miss else SERVER_NAME
    kinds: Counter[str] = Counter()
    while True:
        start = time.perf_counter()
        attempts += 1
        kind, answer, _ = tls_call(ctx, port, timeout=1.0, host=host, server_name=name)
        kinds[kind] += 1
        if mode == INSTANCE:
            hit = kind == "ok" and answer is not None and answer.get("instance") == arg
        elif mode == ANSWER:
            hit = kind == "ok"
        else:
            failed = kind == "refused" if mode == REFUSED else kind != "ok"
            streak = streak + 1 if failed else 0
            hit = streak >= int(arg)
        now = time.perf_counter()
        if hit:
            return PollResult(True, now, time.time(), start, attempts, dict(kinds))
        if now > deadline:
            return PollResult(False, now, time.time(), start, attempts, dict(kinds))
        time.sleep(sleep)


def _poller_main(
    conn: Connection, pki: DevPKI, host: str, sleep: float, fast_miss: bool
) -> None:
    # probe names are not the certificate's name: the chain is checked, the host name not
    ctx = probe_ctx(pki) if fast_miss else client_ctx(pki)
    while True:
        try:
            cmd = conn.recv()
        except EOFError:
            return
        if cmd[0] == "stop":
            return
        _, port, mode, arg, timeout = cmd
        conn.send("polling")
        conn.send(_poll(ctx, host, port, mode, arg, timeout, sleep, fast_miss))


class Poller:
    """A persistent polling process for one gateway address. ``begin`` starts a poll and
    returns once the process is polling; ``result`` waits for its outcome. Each attempt is a
    fresh TCP connection + TLS handshake with the proxy certificate (``tls_call``), ``sleep``
    seconds apart. With ``fast_miss`` an INSTANCE poll names the instance it waits for in
    its server name (``probe_name``): an attempt that reaches another server fails at once."""

    def __init__(
        self, ctx: ForkContext, pki: DevPKI, host: str, sleep: float = 0.001, fast_miss: bool = True
    ) -> None:
        self.host = host
        self._conn, child = ctx.Pipe()
        self._proc: ForkProcess = ctx.Process(
            target=_poller_main, args=(child, pki, host, sleep, fast_miss), daemon=True
        )
        self._timeout = 0.0

    def start(self, stack: contextlib.ExitStack) -> Poller:
        self._proc.start()
        stack.callback(self.stop)
        return self

    def begin(self, port: int, mode: str, arg: Any = None, timeout: float = 20.0) -> None:
        self._timeout = timeout
        self._conn.send(("poll", port, mode, arg, timeout))
        if not self._conn.poll(10.0) or self._conn.recv() != "polling":
            raise HarnessError(f"poller for {self.host} does not answer")

    def result(self) -> PollResult:
        if not self._conn.poll(self._timeout + 10.0):
            raise HarnessError(f"poller for {self.host} hangs")
        res: PollResult = self._conn.recv()
        return res

    def run(self, port: int, mode: str, arg: Any = None, timeout: float = 20.0) -> PollResult:
        self.begin(port, mode, arg, timeout)
        return self.result()

    def stop(self) -> None:
        if self._proc.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(("stop",))
            self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)


def both(
    pollers: Sequence[Poller], port: int, mode: str, arg: Any = None, timeout: float = 20.0
) -> list[PollResult]:
    """The same poll on every gateway at once."""
    for poller in pollers:
        poller.begin(port, mode, arg, timeout)
    return [poller.result() for poller in pollers]


# --- Consul itself -----------------------------------------------------------------------


def _observer_main(conn: Connection, consul_addr: str) -> None:
    """Blocking queries on ``/v1/health/service/<name>``, as a gateway's watch makes them,
    until the answer lists instance ``sid``: when Consul itself shows a change."""
    session = requests.Session()
    while True:
        try:
            cmd = conn.recv()
        except EOFError:
            return
        if cmd[0] == "stop":
            return
        _, name, sid, timeout = cmd
        url = f"{consul_addr}/v1/health/service/{name}"
        deadline = time.perf_counter() + timeout
        seen: float | None = None
        try:
            resp = session.get(url, timeout=10)
            index = resp.headers.get("X-Consul-Index", "0")
        except requests.RequestException:
            conn.send("failed")
            continue
        conn.send("polling")
        try:
            while time.perf_counter() < deadline:
                resp = session.get(url, params={"index": index, "wait": "30s"}, timeout=40)
                now = time.perf_counter()
                index = resp.headers.get("X-Consul-Index", index)
                if any(e.get("Service", {}).get("ID") == sid for e in resp.json()):
                    seen = now
                    break
        except (requests.RequestException, ValueError):
            pass
        conn.send(seen)


class ConsulObserver:
    """A process that reports when Consul's own health endpoint first lists an instance
    (perf_counter; None if not within the timeout): the share of a trial that is Consul's."""

    def __init__(self, ctx: ForkContext, consul_addr: str) -> None:
        self._conn, child = ctx.Pipe()
        self._proc: ForkProcess = ctx.Process(
            target=_observer_main, args=(child, consul_addr), daemon=True
        )

    def start(self, stack: contextlib.ExitStack) -> ConsulObserver:
        self._proc.start()
        stack.callback(self.stop)
        return self

    def begin(self, name: str, sid: str, timeout: float = 20.0) -> bool:
        """Start watching; False when the observer could not read the current index."""
        self._conn.send(("watch", name, sid, timeout))
        if not self._conn.poll(15.0):
            raise HarnessError("Consul observer does not answer")
        first = self._conn.recv()
        return bool(first == "polling")

    def result(self) -> float | None:
        if not self._conn.poll(60.0):
            raise HarnessError("Consul observer hangs")
        seen: float | None = self._conn.recv()
        return seen

    def stop(self) -> None:
        if self._proc.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(("stop",))
            self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)


# --- gateway state -----------------------------------------------------------------------


def active_ports(hp: HAProxy, backend: str) -> set[int] | None:
    """Ports of the servers of ``backend`` that take new connections (ready, weight > 0) in
    the current worker; None when the admin socket does not answer (e.g. mid-reload)."""
    try:
        text = hp.command(f"show servers state {backend}")
    except (SidecarError, OSError):
        return None
    return {
        a.server.port
        for a in parse_servers_state(text)
        if a.backend == backend and a.server.state is ServerState.READY and a.server.weight > 0
    }


def wait_gateways(
    checks: Sequence[Callable[[], bool]], timeout: float, what: str, interval: float = 0.005
) -> float:
    """Wait until every check holds; returns the seconds it took."""
    start = time.monotonic()
    pending = list(checks)
    while pending:
        pending = [check for check in pending if not check()]
        if not pending:
            break
        if time.monotonic() - start > timeout:
            raise HarnessError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start


# --- the daemon's log --------------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    wall: float
    level: str
    message: str


class JsonLog:
    """The daemon's JSON log (``[log] format = "json"``), read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[LogLine] = []
        self._offset = 0

    def refresh(self) -> list[LogLine]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return self.lines
        end = data.rfind(b"\n") + 1
        self._offset += end
        for raw in data[:end].splitlines():
            try:
                rec = json.loads(raw)
                stamp = rec["time"]
                wall = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + (
                    int(stamp[20:23]) / 1000
                )
            except (ValueError, KeyError, TypeError):
                continue  # HAProxy or Python output that is not a log record
            self.lines.append(LogLine(wall, rec.get("level", ""), rec.get("message", "")))
        return self.lines

    def first(self, text: str, since: float = 0.0) -> LogLine | None:
        for line in self.refresh():
            if line.wall >= since and text in line.message:
                return line
        return None

    def applied(self, since: float, needle: str) -> tuple[float, float, str] | None:
        """The first "applied <kind> in N ms: ..." line at or after ``since`` (wall) whose
        changes mention ``needle``: (its wall time, N, kind)."""
        for line in self.refresh():
            if line.wall < since - 0.002 or not line.message.startswith("applied "):
                continue
            if needle in line.message:
                kind, _, rest = line.message[len("applied ") :].partition(" in ")
                with contextlib.suppress(ValueError):
                    return line.wall, float(rest.split(" ms", 1)[0]), kind
        return None

    def apply_times(self, since: float, until: float) -> dict[str, list[float]]:
        """Durations (ms) of every apply logged in [since, until], by kind."""
        out: dict[str, list[float]] = {}
        for line in self.refresh():
            if since <= line.wall <= until and line.message.startswith("applied "):
                kind, _, rest = line.message[len("applied ") :].partition(" in ")
                with contextlib.suppress(ValueError):
                    out.setdefault(kind, []).append(float(rest.split(" ms", 1)[0]))
        return out

    def count(self, text: str, since: float, until: float) -> int:
        return sum(1 for x in self.refresh() if since <= x.wall <= until and text in x.message)


# --- summaries and plots -----------------------------------------------------------------


def stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "max": 0}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def fmt(value: float) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def ratio(baseline: float, project: float) -> str:
    if project != project or baseline != baseline or project <= 0:
        return "-"
    return f"{baseline / project:.1f}x"


def plot_rate(
    path: Path,
    title: str,
    panels: Sequence[tuple[str, float, Sequence[float], Sequence[float]]],
) -> bool:
    """One PNG: per kind (label, target ms, project ms, baseline ms) the two empirical CDFs on
    a log time axis, the target as a dashed line. False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter
    except ImportError:
        return False
    # One x range for every panel, so that the kinds compare at a glance.
    every = [v for _, target, p, b in panels for v in (*p, *b, target) if v > 0]
    low, high = min(every, default=1.0) / 1.5, max(every, default=1000.0) * 1.5
    ticks = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000)
    cols = 2 if len(panels) > 2 else len(panels)
    rows = -(-len(panels) // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(6.0 * cols, 4.2 * rows), squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax, (label, target, project, baseline) in zip(axes, panels, strict=False):
        for values, name, colour in (
            (project, "project (runtime)", "tab:blue"),
            (baseline, "baseline (reload)", "tab:red"),
        ):
            if not values:
                continue
            ordered = sorted(values)
            ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
            ax.step(ordered, ys, where="post", color=colour, label=f"{name}, n={len(values)}")
            ax.plot([percentile(values, 99)], [0.99], "o", color=colour, markersize=4)
        ax.axvline(
            target, color="black", linestyle="--", linewidth=1, label=f"target p99 {target:g} ms"
        )
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        ax.xaxis.set_major_locator(FixedLocator([t for t in ticks if low <= t <= high]))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(0, 1.02)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("PUT return -> first answer by the new instance (ms)")
        ax.set_ylabel("fraction of trials (CDF)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def fork_context() -> ForkContext:
    """Fork: children inherit the shared arrays, locks and DevPKI without pickling."""
    return mp.get_context("fork")

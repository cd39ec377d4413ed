"""Reload under load: fresh TLS connections (client proxy certificate) through 138 frontends
while the sidecar performs >= 100 *settings* reloads and >= 1,000 runtime changes; failed
connections counted by kind, explained by HAProxy's own connection log, beside a control arm.

Arms, run one after the other on the same machine with the same client load:
- control: the client processes connect straight to the backends (no gateway, no reloads), so
  that what the backends themselves fail under this load is known;
- gateway: through HAProxy, while the harness reloads the settings (it rewrites the settings
  file, alternating [haproxy] timeout_connect between 5s and 6s, sends SIGHUP and waits until
  the master counted the reload) and makes runtime changes.

Setup: a Consul dev agent, ``--backends`` sample TLS backends (child processes), 138 DIRAC
services declared in [ports.overrides] (even-numbered ones with 2 instances, odd-numbered ones
with 1), ``sidecar run`` with defaults otherwise. HAProxy logs every connection (``option
tcplog``) to a UDP receiver of the harness: the termination state of each failed connection
(``CD``, ``SC``, ``sC``...) says who ended it.

Load: ``--clients`` processes, each opening fresh TCP connections with a full TLS handshake
(proxy certificate, hostname check) to a random one of the 138 public ports (control: to a
random backend), reading the backend's answer, closing; as fast as they can, 5 s timeout.

Runtime changes, in bursts of 10 every 0.4 s (~20 changes/s): on the 2-instance services, flip
the second instance between Consul maintenance and not (40 %), between a critical and a passing
TTL check (40 %), or register/deregister a third instance on another backend (20 %). The first
instance always stays passing, so no service ever has zero usable servers.

    .venv/bin/python bench/reload_under_load.py [--reloads 100] [--runtime 1000] [--clients 4]
        [--arms control,gateway]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import random
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import (
    FAILURE_KINDS,
    Backends,
    Consul,
    HarnessError,
    Sidecar,
    client_ctx,
    haproxy_version,
    loadavg,
    machine_line,
    make_pki,
    print_table,
    probe_ports,
    tls_call,
    wait_for,
    workdir,
)

SERVICES = 138
BURST = 10  # runtime catalog changes per burst ...
BURST_GAP = 0.4  # ... then this long before the next burst
TIME_CAP = 300.0  # seconds: the change phase never runs longer
NORMAL = ("--", "CD")  # termination states of a connection that ended as this client ends it
# tcplog: ... fe_9162 bk_X/srv 1/0/12 2345 -- 3/3/2/1/0 0/0   (termination state after bytes)
TCPLOG = re.compile(r" (fe_\d+) (\S+)/(\S+) (-?\d+)/(-?\d+)/(\+?-?\d+) \+?(\d+) (\S\S) ")


def client_loop(
    pki_dir: str,
    ports: list[int],
    stop: Any,
    out: Any,
    seed: int,
    max_calls: int,
    max_seconds: float,
) -> None:
    """One client process: fresh TLS connections to random ports until told to stop."""
    from common import make_pki as _make_pki

    ctx = client_ctx(_make_pki(Path(pki_dir)))
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    samples: list[tuple[float, int, str, str]] = []
    per_second: Counter[int] = Counter()
    deadline = time.monotonic() + max_seconds
    calls = 0
    while not stop.is_set() and calls < max_calls and time.monotonic() < deadline:
        port = rng.choice(ports)
        kind, _, message = traced_call(ctx, port)
        calls += 1
        counts[kind] += 1
        if kind == "ok":
            per_second[int(time.time())] += 1
        elif len(samples) < 200:
            samples.append((time.time(), port, kind, message[:160]))
    out.put({"counts": dict(counts), "samples": samples, "per_second": dict(per_second)})


def traced_call(ctx: Any, port: int) -> tuple[str, Any, str]:
    """``tls_call``, and on failure the client's own port (to find it in HAProxy's log)."""
    import socket as _socket
    import ssl as _ssl

    from common import SERVER_NAME, classify

    stage, local = "connect", 0
    try:
        with _socket.create_connection(("127.0.0.1", port), timeout=5.0) as raw:
            local = raw.getsockname()[1]
            stage = "handshake"
            with ctx.wrap_socket(raw, server_hostname=SERVER_NAME) as tls:
                stage = "read"
                tls.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_QUICKACK, 1)
                data = b""
                while b"\n" not in data and len(data) < 65536:
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    data += chunk
    except (OSError, _ssl.SSLError) as exc:
        return classify(exc), None, f"client port {local}: {stage}: {type(exc).__name__}: {exc}"
    if b"\n" not in data:
        return "closed", None, f"client port {local}: read: closed without an answer"
    return "ok", None, ""


class Load:
    """``clients`` client processes on ``ports``; ``finish()`` gathers their figures."""

    def __init__(self, pki_dir: Path, ports: list[int], clients: int, seed: int) -> None:
        self.stop = mp.Event()
        self.out: Any = mp.Queue()
        self.procs = [
            mp.Process(
                target=client_loop,
                args=(str(pki_dir), ports, self.stop, self.out, seed + i, 5_000_000, TIME_CAP + 60),
            )
            for i in range(clients)
        ]

    def start(self, stack: contextlib.ExitStack) -> Load:
        for p in self.procs:
            p.start()
        stack.callback(lambda: [p.kill() for p in self.procs if p.is_alive()])
        return self

    def finish(self) -> dict[str, Any]:
        self.stop.set()
        results = [self.out.get(timeout=60) for _ in self.procs]
        for p in self.procs:
            p.join(10)
        counts: Counter[str] = Counter()
        per_second: Counter[int] = Counter()
        samples: list[tuple[float, int, str, str]] = []
        for r in results:
            counts.update(r["counts"])
            per_second.update({int(k): v for k, v in r["per_second"].items()})
            samples += r["samples"]
        return {"counts": counts, "per_second": per_second, "samples": sorted(samples)}


class LogReceiver:
    """HAProxy's connection log over UDP (syslog): every line whose termination state is not
    a normal end is kept with the time it arrived. Normal here: ``--``, and ``CD`` (the client
    closed during the data phase: this client closes once it has read the answer)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines = 0
        self.states: Counter[str] = Counter()
        self.abnormal: list[tuple[float, str]] = []
        self.by_frontend: dict[str, list[tuple[float, str]]] = {}  # every line, for failures
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, stack: contextlib.ExitStack) -> LogReceiver:
        stack.callback(self.stop)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except OSError:
                continue
            line = data.decode("utf-8", "replace")
            match = TCPLOG.search(line)
            if not match:
                continue
            self.lines += 1
            state = match.group(8)
            self.by_frontend.setdefault(match.group(1), []).append(
                (time.time(), line.split(": ", 1)[-1].strip()[:240])
            )
            self.states[state] += 1
            if state not in NORMAL and len(self.abnormal) < 2000:
                self.abnormal.append((time.time(), line.split(": ", 1)[-1].strip()[:240]))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


class DeniedMonitor:
    """Connections the current worker refused with the no-usable-server rule (``dcon`` of
    each frontend, ``show stat``): HAProxy logs no line for them, so they are sampled."""

    def __init__(self, admin: Path) -> None:
        self.admin = admin
        self.events: list[tuple[float, int, str, int]] = []  # (time, worker pid, frontend, +n)
        self._seen: dict[tuple[int, str], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, stack: contextlib.ExitStack) -> DeniedMonitor:
        stack.callback(self.stop)
        self._thread.start()
        return self

    def _run(self) -> None:
        from sidecar.haproxy.sockets import send_command

        while not self._stop.wait(0.1):
            try:
                text = send_command(self.admin, "show info;show stat -1 1 -1", timeout=2.0)
            except Exception:
                continue
            pid, header = 0, []
            for line in text.splitlines():
                if line.startswith("Pid:"):
                    pid = int(line.split(":", 1)[1])
                elif line.startswith("# pxname"):
                    header = line[2:].split(",")
                elif header and "," in line:
                    row = dict(zip(header, line.split(","), strict=False))
                    n = int(row.get("dcon") or 0)
                    key = (pid, row.get("pxname", ""))
                    if n > self._seen.get(key, 0):
                        self.events.append((time.time(), pid, key[1], n - self._seen.get(key, 0)))
                    self._seen[key] = n

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def rate(per_second: Counter[int], t0: float, t1: float) -> tuple[float, int, int]:
    window = [per_second.get(s, 0) for s in range(int(t0) + 1, int(t1))]
    return sum(window) / max(1, len(window)), min(window, default=0), max(window, default=0)


def control_arm(
    args: argparse.Namespace, pki: Any, pool: list[Any], duration: float
) -> dict[str, Any]:
    """The same client load straight to the backends: what they fail by themselves."""
    with contextlib.ExitStack() as stack:
        load = Load(pki.directory, [b.port for b in pool], args.clients, 2000).start(stack)
        time.sleep(3.0)
        t0 = time.time()
        time.sleep(duration)
        t1 = time.time()
        result = load.finish()
    result["window"] = (t0, t1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reloads", type=int, default=100)
    parser.add_argument("--runtime", type=int, default=1000, help="runtime catalog changes")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--backends", type=int, default=4)
    parser.add_argument("--arms", default="control,gateway")
    args = parser.parse_args()
    arms = set(args.arms.split(","))
    print(f"# reload under load  {machine_line()}")
    print(f"# {haproxy_version()}")
    base = workdir()
    loads = [loadavg()]
    with contextlib.ExitStack() as stack:
        pki = make_pki(base / "pki")
        consul = Consul(base / "consul").start(stack)
        print(f"# {consul.version()}; workdir {base}")
        pool = Backends(pki, base).start(stack, args.backends)
        ports = probe_ports(SERVICES)
        overrides = {f"Bench/Svc{k:03d}": ports[k] for k in range(SERVICES)}
        two = []  # services with a second (flippable) instance
        for k in range(SERVICES):
            consul.register(
                f"bench-svc-{k}", f"svc{k}-i1", pool[k % len(pool)].port, "Bench", f"Svc{k:03d}"
            )
            if k % 2 == 0:
                consul.register(
                    f"bench-svc-{k}",
                    f"svc{k}-i2",
                    pool[(k + 1) % len(pool)].port,
                    "Bench",
                    f"Svc{k:03d}",
                )
                two.append(k)
        receiver = LogReceiver().start(stack)
        sections: dict[str, dict[str, Any]] = {
            "haproxy": {"log_target": f"127.0.0.1:{receiver.port} local0", "timeout_connect": "5s"},
            "certs": {"ca_dir": str(pki.ca_dir)},
        }
        sidecar = Sidecar(base / "gw", consul.addr, overrides=overrides, sections=sections)
        sidecar.start(stack)
        wait_for(lambda: sidecar.status().get("services") == SERVICES, 60, 0.1, "138 services")
        sidecar.wait_idle()
        ctx = client_ctx(pki)
        for port in ports:
            kind, _, msg = tls_call(ctx, port)
            if kind != "ok":
                raise HarnessError(f"port {port} does not answer before the run: {kind} {msg}")
        hp = sidecar.haproxy
        info0 = hp.proc()
        st0 = sidecar.status()
        if info0 is None:
            raise HarnessError("no HAProxy master answers")
        if "gateway" not in arms:
            control = control_arm(args, pki, pool, 60.0)
            gateway = None
        else:
            gateway = gateway_arm(args, sidecar, consul, pool, ports, two, receiver, pki, loads)
            control = (
                control_arm(args, pki, pool, gateway["duration"]) if "control" in arms else None
            )
        info1 = hp.proc()
        st1 = sidecar.status()
        rolled = sidecar.log_count("rolled back")
        deferred = sidecar.log_count("reload deferred")
    report(args, gateway, control, receiver, info0, info1, st0, st1, rolled, deferred, loads)
    return 0


def gateway_arm(args, sidecar, consul, pool, ports, two, receiver, pki, loads) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    with contextlib.ExitStack() as stack:
        load = Load(pki.directory, list(ports), args.clients, 1000).start(stack)
        denied = DeniedMonitor(sidecar.runtime_dir / "admin.sock").start(stack)
        time.sleep(3.0)  # warm up
        t_start = time.time()
        loads.append(loadavg())
        done = threading.Event()
        errors: list[str] = []
        issued: Counter[str] = Counter()
        reload_times: list[tuple[float, float]] = []  # (SIGHUP sent, master counted it)
        text = sidecar.config_path.read_text()

        def reload_driver() -> None:
            try:
                deadline = time.monotonic() + TIME_CAP
                for n in range(args.reloads):
                    if time.monotonic() > deadline:
                        break
                    before = sidecar.haproxy.proc()
                    value = "6s" if n % 2 == 0 else "5s"
                    sidecar.config_path.write_text(
                        text.replace('timeout_connect = "5s"', f'timeout_connect = "{value}"')
                    )
                    os.kill(sidecar.pid, signal.SIGHUP)
                    sent = time.time()
                    issued["reload"] += 1
                    wait_for(
                        lambda: (
                            (i := sidecar.haproxy.proc()) is not None
                            and before is not None
                            and i.reloads > before.reloads
                        ),
                        30,
                        0.01,
                        "the master to count the settings reload",
                    )
                    reload_times.append((sent, time.time()))
                    time.sleep(0.05)
            except Exception as exc:
                errors.append(f"reload driver: {exc}")

        def runtime_driver() -> None:
            rng = random.Random(7)
            maint: set[int] = set()
            critical: set[int] = set()
            third: set[int] = set()
            deadline = time.monotonic() + TIME_CAP
            try:
                while (
                    issued["runtime"] < args.runtime or not done.is_set()
                ) and time.monotonic() < deadline:
                    for k in rng.sample(two, BURST):
                        roll = rng.random()
                        if roll < 0.4:
                            on = k not in maint
                            consul.maintenance(f"svc{k}-i2", on)
                            (maint.add if on else maint.discard)(k)
                        elif roll < 0.8:
                            bad = k not in critical
                            consul.set_ttl(f"svc{k}-i2", "critical" if bad else "passing")
                            (critical.add if bad else critical.discard)(k)
                        elif k in third:
                            consul.deregister(f"svc{k}-i3")
                            third.discard(k)
                        else:
                            consul.register(
                                f"bench-svc-{k}",
                                f"svc{k}-i3",
                                pool[(k + 2) % len(pool)].port,
                                "Bench",
                                f"Svc{k:03d}",
                            )
                            third.add(k)
                        issued["runtime"] += 1
                    time.sleep(BURST_GAP)
            except Exception as exc:
                errors.append(f"runtime driver: {exc}")

        threads = [threading.Thread(target=reload_driver), threading.Thread(target=runtime_driver)]
        for t in threads:
            t.start()
        threads[0].join(TIME_CAP + 60)
        done.set()
        threads[1].join(TIME_CAP + 60)
        time.sleep(3.0)  # the last changes settle under load
        t_end = time.time()
        loads.append(loadavg())
        result = load.finish()
        if errors:
            raise HarnessError("; ".join(errors))
    result.update(
        issued=issued,
        window=(t_start, t_end),
        duration=t_end - t_start,
        denied=denied.events,
        reloads=reload_times,
    )
    return result


def report(
    args, gateway, control, receiver, info0, info1, st0, st1, rolled, deferred, loads
) -> None:  # type: ignore[no-untyped-def]
    rows = []
    for name, arm in (("control (straight to the backends)", control), ("gateway", gateway)):
        if arm is None:
            continue
        counts = arm["counts"]
        failed = sum(v for k, v in counts.items() if k != "ok")
        mean, low, high = rate(arm["per_second"], *arm["window"])
        rows += [
            [f"{name}: connections", sum(counts.values()), ""],
            [f"{name}: failed", failed, "0" if name == "gateway" else ""],
            *[[f"  {kind}", counts.get(kind, 0), ""] for kind in FAILURE_KINDS if counts.get(kind)],
            [f"{name}: new TLS conn/s (mean; min/max per s)", f"{mean:.0f} ({low}/{high})", ""],
        ]
    if gateway is not None:
        master = (info1.reloads - info0.reloads) if info1 else -1
        rows += [
            [
                "settings reloads: master (show proc) / driven",
                f"{master} / {gateway['issued']['reload']}",
                ">= 100",
            ],
            ["runtime catalog changes made", gateway["issued"]["runtime"], ">= 1000"],
            [
                "runtime API commands (status.json)",
                st1.get("runtime_changes", 0) - st0.get("runtime_changes", 0),
                "",
            ],
            [
                "reload failures / rolled back",
                f"{st1.get('reload_failures', 0)} / {rolled}",
                "0 / 0",
            ],
            ["reloads deferred for old workers", deferred, ""],
            [
                "HAProxy connection log lines / termination states",
                receiver.lines,
                json.dumps(dict(receiver.states)),
            ],
        ]
    rows += [
        ["client processes / backends", f"{args.clients} / {args.backends}", ""],
        ["load average (start, load on, end)", " / ".join(loads), ""],
    ]
    print_table("reload under load (settings reloads)", ["figure", "value", "target"], rows)
    for name, arm in (("control", control), ("gateway", gateway)):
        if arm and arm["samples"]:
            print(f"\n{name}: first failed connections (time, port, kind, message):")
            for stamp, port, kind, msg in arm["samples"][:15]:
                print(f"  {_ts(stamp)} {port} {kind} {msg}")
    if receiver.abnormal:
        print("\nHAProxy connections that did not end normally (first 20):")
        for stamp, line in receiver.abnormal[:20]:
            print(f"  {_ts(stamp)} {line}")
    if gateway and gateway["denied"]:
        failed_fe = {f"fe_{port}" for _, port, _, _ in gateway["samples"]}
        shown = [d for d in gateway["denied"] if d[2] in failed_fe]
        print("\nrefused by the no-usable-server rule on the failed ports (time, worker, fe, n):")
        for stamp, pid, frontend, n in shown[:20]:
            print(f"  {_ts(stamp)} {pid} {frontend} +{n}")
    if gateway:
        print("\nfailures and the nearest settings reload (SIGHUP sent -> master counted it):")
        for stamp, port, kind, _msg in gateway["samples"][:20]:
            near = min(gateway["reloads"], key=lambda r: abs(r[0] - stamp), default=None)
            if near:
                print(
                    f"  {_ts(stamp)} {port} {kind}: reload {_ts(near[0])} -> {_ts(near[1])} "
                    f"({(stamp - near[0]) * 1000:+.0f} ms after the SIGHUP)"
                )
    if gateway:
        for stamp, port, kind, _msg in gateway["samples"][:10]:
            near = [
                (t, line)
                for t, line in receiver.by_frontend.get(f"fe_{port}", [])
                if abs(t - stamp) < 1.5
            ]
            print(f"\nHAProxy's log of fe_{port} within 1.5 s of the {kind} at {_ts(stamp)}:")
            client = _msg.split(":", 1)[0].removeprefix("client port ")
            for t, line in near:
                mark = " <== this client" if f"127.0.0.1:{client} " in line else ""
                print(f"  {_ts(t)} {line}{mark}")
    failed = sum(v for k, v in gateway["counts"].items() if k != "ok") if gateway else 0
    print("0 failed connections" if failed == 0 else f"TARGET MISSED: {failed} failed connections")


def _ts(stamp: float) -> str:
    return f"{time.strftime('%H:%M:%S', time.gmtime(stamp))}.{int(stamp % 1 * 1000):03d}Z"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as exc:
        print(f"harness failure: {exc}", file=sys.stderr)
        sys.exit(2)

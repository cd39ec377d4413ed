"""Scale: 138 services x 10 instances and 1,000 services x 5 instances.

1. Render + validate: ``sidecar.core.pipeline.render`` on a synthetic Snapshot (first render, and a
   steady-state render with the previous state, as the daemon does on every cycle), then
   ``HAProxy(settings).validate`` (``haproxy -c``). 5 repetitions, median and max.
2. The daemon at that size on a real Consul agent: time to converge from start, RSS once
   converged (psutil), idle CPU over ``--idle`` seconds (60 by default; psutil cpu_times delta,
   user + system), Consul requests per second while idle (status.json ``consul_requests``
   delta over the same window) and the largest number of requests in one second. A 60 s
   window right after start holds none of the watches' renewals (each parks for 510-638 s
   with the default ``wait`` of 10 min); ``--idle 660`` holds one of each, which is the
   steady state.
   Instances are listening sockets that accept and close (HAProxy's TCP checks pass);
   ``[haproxy] check_inter = "10s"`` (default 2 s) keeps HAProxy's 5,000 checks from loading
   the 2-core machine; it does not touch the daemon. At 1,000 x 5, ``maxconn = 4000`` (default
   8000): HAProxy asks for ~2 x maxconn + listeners + checks file descriptors (25,039 with
   the default), above this machine's hard limit of 20,000. Instances are registered with the
   catalog API (on 8 synthetic node names): the agent API needs ~30 ms per registration once
   the agent holds thousands of services.
   The Consul agent is started with ``limits.http_max_conns_per_client = 4096`` (Consul's
   default is 200, fewer than the 1,001 blocking queries of one gateway at 1,000 services);
   ``--consul-max-conns 0`` keeps Consul's default.
3. A change stream at that size (``--stream-rate`` changes/s for ``--stream-seconds``, 0:
   skip), after the idle window: an extra instance of a random service registered or
   deregistered (catalog API, on spare sink ports); the daemon's CPU over the stream, its
   runtime applies and their durations (its log), and how often it wrote the config file of
   those changes (the file's modification time, polled every 20 ms). A rolling update at
   1,000 services is that: each change a runtime apply, the file written behind them.
4. Idle Consul load in steady state for 138 services: with ``[consul] wait = 600`` (default)
   a one-minute window right after start sees (almost) no returns, since every watch parks for
   510-638 s. A second daemon with ``wait = 30`` (20x faster, ``--scaled-wait``) shows the
   steady-state rate and the spread of wake-ups; the rate scales as 1/wait.

    .venv/bin/python bench/scale.py [--idle 60] [--sizes 138x10,1000x5] [--scaled-wait 30] [--checkout]

The daemon runs from the built wheel in a fresh venv (what a gateway gets: the package's
dependencies only: the checkout's dev tools add to what the daemon imports); ``--checkout``
runs it from this checkout instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil
import requests
from common import (
    Consul,
    HarnessError,
    Sidecar,
    Sink,
    haproxy_version,
    loadavg,
    machine_line,
    print_table,
    probe_ports,
    wait_for,
    workdir,
)

from devkit.consul_agent import ConsulAgent, find_consul
from devkit.wheel import installed_venv
from sidecar.config.loader import parse_settings
from sidecar.core import pipeline
from sidecar.core.model import Health, Instance, ServiceEntries, Snapshot
from sidecar.haproxy.inputs import build_inputs
from sidecar.haproxy.process import HAProxy

SPARE = 20  # sink ports for the stream's extra instances


def synthetic(services: int, instances: int, port0: int) -> Snapshot:
    entries = []
    for k in range(services):
        name = f"bench-scale-{k}"
        meta = (
            ("dirac_port", str(port0 + k)),
            ("dirac_service", f"Svc{k:04d}"),
            ("dirac_system", "Scale"),
        )
        insts = tuple(
            Instance(
                name,
                "node1",
                f"s{k}-{j}",
                "127.0.0.1",
                30000 + (k * instances + j) % 30000,
                ("dirac",),
                meta,
                Health.PASSING,
            )
            for j in range(instances)
        )
        entries.append(ServiceEntries(name, 100 + k, insts))
    return Snapshot(tuple(entries), 1000)


def render_validate(base: Path, services: int, instances: int, reps: int = 5) -> list[list[str]]:
    settings = parse_settings(
        {
            "haproxy": {"runtime_dir": str(base / f"rv{services}")},
            "gateway": {"bind": "127.0.0.1", "backend_networks": ["127.0.0.0/8"]},
            "ports": {"public_ranges": [f"10000-{10000 + services}"]},
            "limits": {"max_services": max(2000, services + 100)},  # default cap: 2,000
        },
        "<bench>",
        env={},
    )
    inputs = build_inputs(settings)
    hp = HAProxy(settings)
    hp.prepare()
    snap = synthetic(services, instances, 10000)
    first, steady, valid = [], [], []
    rendered = None
    for _ in range(reps):
        t = time.perf_counter()
        rendered = pipeline.render(snap, inputs, None)
        first.append(time.perf_counter() - t)
        t = time.perf_counter()
        again = pipeline.render(snap, inputs, rendered)
        steady.append(time.perf_counter() - t)
        t = time.perf_counter()
        hp.validate(again.config)
        valid.append(time.perf_counter() - t)
    assert rendered is not None and rendered.desired is not None
    ours = sum(1 for b in rendered.desired.backends if b.system == "Scale")  # + the port map's
    if ours != services:
        raise HarnessError(f"rendered {ours} of {services} services")
    total = [a + b for a, b in zip(steady, valid, strict=True)]
    lines = rendered.config.count("\n")

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.0f} / {max(values) * 1000:.0f}"

    label = f"{services}x{instances}"
    return [
        [label, "render, first (no previous state)", ms(first), ""],
        [label, "render, steady (previous state given)", ms(steady), ""],
        [label, "haproxy -c", ms(valid), ""],
        [label, "render (steady) + validate", ms(total), "<= 1000 ms" if services >= 1000 else ""],
        [label, "config lines", str(lines), ""],
    ]


class ConsulWithLimits(ConsulAgent):
    """The dev agent with a higher per-client HTTP connection limit."""

    max_conns = 4096

    def _write_config(self) -> Path:
        path = super()._write_config()
        data = json.loads(path.read_text())
        if self.max_conns:
            data["limits"] = {"http_max_conns_per_client": self.max_conns}
        path.write_text(json.dumps(data))
        return path


def registration(k: int, sid: str, port: int) -> dict:
    """The catalog API body of instance ``sid`` of service ``k`` (on node scale-n<k % 8>)."""
    return {
        "Node": f"scale-n{k % 8}",
        "Address": "127.0.0.1",
        "Service": {
            "Service": f"bench-scale-{k}",
            "ID": sid,
            "Address": "127.0.0.1",
            "Port": port,
            "Tags": ["dirac"],
            "Meta": {"dirac_system": "Scale", "dirac_service": f"Svc{k:04d}"},
        },
        "Check": {"CheckID": f"service:{sid}", "Name": "bench", "Status": "passing", "ServiceID": sid},
    }


def register_all(
    consul: Consul, services: int, instances: int, ports: list[int], threads: int = 4
) -> None:
    errors: list[str] = []

    def work(w: int) -> None:
        session = requests.Session()
        try:
            for k in range(w, services, threads):
                for j in range(instances):
                    # The catalog API on other node names: the agent API takes ~30 ms per
                    # registration once it holds thousands (142 s for 5,000).
                    body = registration(k, f"s{k}-{j}", ports[k * instances + j])
                    r = session.put(f"{consul.addr}/v1/catalog/register", json=body, timeout=30)
                    if r.status_code != 200:
                        errors.append(r.text[:200])
                        return
        finally:
            session.close()

    ts = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(600)
    if errors:
        raise HarnessError(f"registration failed: {errors[0]}")


def stream_run(
    consul: Consul,
    sidecar: Sidecar,
    services: int,
    spare: list[int],
    rate: float,
    seconds: float,
    label: str,
) -> list[list[str]]:
    """Toggle an extra instance of random services at ``rate``/s for ``seconds`` (bounded)."""
    rng = random.Random(7)
    session = requests.Session()
    extra: dict[int, str] = {}
    config = sidecar.haproxy.config
    writes, stop = [0], threading.Event()

    def watch_file() -> None:
        last = config.stat().st_mtime_ns
        while not stop.wait(0.02):
            now = config.stat().st_mtime_ns
            if now != last:
                writes[0], last = writes[0] + 1, now

    watcher = threading.Thread(target=watch_file, daemon=True)
    log_start = sidecar.log_path.stat().st_size
    proc = psutil.Process(sidecar.pid)
    watcher.start()
    cpu0, t0 = proc.cpu_times(), time.monotonic()
    changes = 0
    try:
        for i in range(int(rate * seconds)):
            due = t0 + i / rate
            if (delay := due - time.monotonic()) > 0:
                time.sleep(delay)
            k = rng.randrange(services)
            if k in extra:
                body: dict = {"Node": f"scale-n{k % 8}", "ServiceID": extra.pop(k)}
                r = session.put(f"{consul.addr}/v1/catalog/deregister", json=body, timeout=30)
            else:
                body = registration(k, extra.setdefault(k, f"x{k}-{i}"), spare[k % len(spare)])
                r = session.put(f"{consul.addr}/v1/catalog/register", json=body, timeout=30)
            if r.status_code != 200:
                raise HarnessError(f"stream change failed: {r.text[:200]}")
            changes += 1
        elapsed = time.monotonic() - t0
        sidecar.wait_idle(threshold=5.0, window=2.0, timeout=120)  # the last change applied
        cpu1, t1 = proc.cpu_times(), time.monotonic()
    finally:
        stop.set()
        watcher.join(5)
        session.close()
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (t1 - t0) * 100
    with sidecar.log_path.open("rb") as f:
        f.seek(log_start)
        text = f.read().decode(errors="replace")
    applies = [float(m) for m in re.findall(r"applied runtime in (\d+) ms", text)]
    applies.sort()
    p50 = applies[len(applies) // 2] if applies else 0.0
    p99 = applies[min(len(applies) - 1, int(len(applies) * 0.99))] if applies else 0.0
    what = f"stream {rate:g}/s for {elapsed:.0f} s ({changes} changes)"
    return [
        [label, f"{what}: daemon CPU (% of one core)", f"{cpu:.1f}", ""],
        [label, "  runtime applies, their duration p50 / p99 (ms, log)",
         f"{len(applies)}, {p50:.0f} / {p99:.0f}", ""],
        [label, "  config file of runtime changes written", f"{writes[0]} times", ""],
    ]


def daemon_run(
    base: Path,
    consul: Consul,
    services: int,
    instances: int,
    public: list[int],
    idle: float,
    wait: float | None,
    label: str,
    venv: Path | None = None,
    stream: tuple[list[int], float, float] | None = None,
) -> list[list[str]]:
    stack = contextlib.ExitStack()
    with stack:
        overrides = {f"Scale/Svc{k:04d}": public[k] for k in range(services)}
        # the public ports are exactly the declared ones: instances on 127.0.0.1 elsewhere in
        # the auto range would otherwise be refused as loops into the gateway
        sections: dict[str, dict] = {
            "haproxy": {"check_inter": "10s"},
            "ports": {"public_ranges": [f"{min(public[:services])}-{max(public[:services])}"]},
            "limits": {"max_services": max(2000, services + 100)},  # default cap: 2,000
        }
        if services * instances > 2000:
            # HAProxy wants ~2 x maxconn + listeners + checks descriptors (25,039 at 1,000x5
            # with the default maxconn 8000); this machine's hard limit is 20,000.
            sections["haproxy"]["maxconn"] = 4000
        if wait is not None:
            sections["consul"] = {"wait": wait}
        t0 = time.monotonic()
        sidecar = Sidecar(
            base / f"gw-{label}", consul.addr, overrides=overrides, sections=sections, venv=venv
        ).start(stack, timeout=300)
        wait_for(
            lambda: sidecar.status().get("servers_ready") == services * instances,
            300,
            0.2,
            f"{services * instances} servers ready",
        )
        converge = time.monotonic() - t0
        # The first certificate check dials every new server once (here: TLS refused by the
        # sinks); it is start-up work, not idle work: the idle window begins after it.
        wait_for(
            lambda: len((sidecar.status().get("certs") or {}).get("servers") or ())
            >= services * instances,
            600,
            0.5,
            "the first certificate check of every server",
        )
        certs_done = time.monotonic() - t0
        sidecar.wait_idle(threshold=5.0, window=2.0, timeout=120)
        proc = psutil.Process(sidecar.pid)
        rss = proc.memory_info().rss
        parts = smaps(sidecar.pid)
        threads = proc.num_threads()
        st0 = sidecar.status()
        cpu0, wall0 = proc.cpu_times(), time.monotonic()
        per_second = []
        last = st0.get("consul_requests", 0)
        while time.monotonic() - wall0 < idle:
            time.sleep(1.0)
            now = sidecar.status().get("consul_requests", last)
            per_second.append(now - last)
            last = now
        cpu1, wall1 = proc.cpu_times(), time.monotonic()
        st1 = sidecar.status()
        rss_end = proc.memory_info().rss
        streamed = []
        if stream is not None and stream[1] > 0 and wait is None:
            streamed = stream_run(consul, sidecar, services, stream[0], stream[1], stream[2], label)
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (wall1 - wall0) * 100
    reqs = st1.get("consul_requests", 0) - st0.get("consul_requests", 0)
    wait_label = f"wait={wait:g}s" if wait is not None else "wait=600s (default)"
    rows = [[label, "time from start to converged (s)", f"{converge:.1f}", ""],
            [label, "  first certificate check of every server done (s)", f"{certs_done:.1f}", ""]]
    if wait is None:
        rows += [
            [
                label,
                "daemon RSS once converged / after idle (MB)",
                f"{rss / 1e6:.1f} / {rss_end / 1e6:.1f}",
                "<= 60 MB",
            ],
            [
                label,
                "  of which anonymous / file-backed (libraries) (MB)",
                f"{parts['Anonymous'] / 1e3:.1f} / {(parts['Rss'] - parts['Anonymous']) / 1e3:.1f}",
                "",
            ],
            [label, "daemon threads", str(threads), "<= 10"],
            [label, f"idle CPU over {wall1 - wall0:.0f} s (% of one core)", f"{cpu:.2f}", "<= 0.3 %"],
        ]
    rows += [
        [
            label,
            f"Consul requests/s idle ({wait_label}, {wall1 - wall0:.0f} s)",
            f"{reqs / (wall1 - wall0):.2f} ({reqs} requests)",
            "<= 1 req/s (138 services)" if services == 138 else "",
        ],
        [label, "  most requests in one second", str(max(per_second, default=0)), ""],
        *streamed,
    ]
    if wait is not None:
        rows.append(
            [
                label,
                "  same rate scaled to wait=600 s",
                f"{reqs / (wall1 - wall0) * wait / 600:.2f}",
                "<= 1 req/s",
            ]
        )
    return rows


def smaps(pid: int) -> dict[str, int]:
    """kB figures of /proc/PID/smaps_rollup (Rss, Pss, Anonymous, ...)."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        out[key.strip()] = int(rest.split()[0])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=float, default=60.0, help="idle window (s)")
    parser.add_argument("--sizes", default="138x10,1000x5")
    parser.add_argument("--scaled-wait", type=float, default=30.0, help="0: skip")
    parser.add_argument("--consul-max-conns", type=int, default=4096)
    parser.add_argument("--stream-rate", type=float, default=10.0, help="changes/s; 0: skip")
    parser.add_argument("--stream-seconds", type=float, default=20.0)
    parser.add_argument("--skip-daemon", action="store_true")
    parser.add_argument(
        "--checkout",
        action="store_true",
        help="run the daemon from this checkout's venv (dev tools loaded) instead of the wheel",
    )
    args = parser.parse_args()
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]
    print(f"# scale  {machine_line()}")
    print(f"# {haproxy_version()}")
    base = workdir()
    rows: list[list[str]] = []
    for services, instances in sizes:
        rows += render_validate(base, services, instances)
    print_table(
        "render + validate (ms: median / max of 5)", ["size", "step", "value", "target"], rows
    )
    loads = [loadavg()]
    rows = []
    venv = None
    if not args.skip_daemon and not args.checkout:
        venv = installed_venv(base)  # what a gateway runs: the wheel and its dependencies only
        print(f"# daemon: the built wheel in {venv}", flush=True)
    if not args.skip_daemon:
        for services, instances in sizes:
            label = f"{services}x{instances}"
            with contextlib.ExitStack() as stack:
                consul = Consul(base / f"consul-{label}")
                ConsulWithLimits.max_conns = args.consul_max_conns
                consul.agent = ConsulWithLimits(
                    workdir=base / f"consul-{label}", binary=find_consul()
                )
                consul.start(stack)
                n = services * instances
                every = probe_ports(n + services + SPARE)
                inst_ports, public, spare = every[:n], every[n : n + services], every[n + services :]
                Sink(inst_ports + spare).start(stack)
                t = time.monotonic()
                register_all(consul, services, instances, inst_ports)
                print(
                    f"# {label}: registered {services * instances} instances in "
                    f"{time.monotonic() - t:.1f} s ({consul.version()})",
                    flush=True,
                )
                stream = (spare, args.stream_rate, args.stream_seconds)
                rows += daemon_run(
                    base, consul, services, instances, public, args.idle, None, label, venv, stream
                )
                loads.append(loadavg())
                if services == 138 and args.scaled_wait:
                    rows += daemon_run(
                        base,
                        consul,
                        services,
                        instances,
                        public,
                        args.idle,
                        args.scaled_wait,
                        label + "-w",
                        venv,
                    )
                    loads.append(loadavg())
        rows.append(["", "load average (start, after each run)", " / ".join(loads), ""])
        print_table("the daemon at scale", ["size", "figure", "value", "target"], rows)
    print(f"# workdir {base}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as exc:
        print(f"harness failure: {exc}", file=sys.stderr)
        sys.exit(2)

"""Reload under load: fresh TLS connections (client proxy certificate) through 138 frontends
while the sidecar performs >= 100 reloads and >= 1,000 runtime changes; failed connections
counted by kind.

Setup: a Consul dev agent, ``--backends`` sample TLS backends (child processes), 138 DIRAC
services (even-numbered ones with 2 instances, odd-numbered ones with 1), ``sidecar run`` with
``[apply] min_reload_interval = 0.2`` (lowered from the default 1 s so that 100 reloads fit in
about a minute) and ``[gateway] keep_vanished_services = false`` (so that deregistering a
service removes its frontend: a structural change). Everything else is default.

Load: ``--clients`` processes, each opening fresh TCP connections with a full TLS handshake
(proxy certificate, hostname check) to a random one of the 138 public ports, reading the
backend's answer, closing; as fast as they can (no pacing), 5 s timeout per call.

Changes, driven from the harness while the load runs:
- reloads: register, then deregister, an extra DIRAC service (a frontend appears, then goes);
  the next change is made only once the daemon counted the reload (status.json) and
  min_reload_interval has passed;
- runtime changes, in bursts of 10 followed by 0.4 s of quiet (~20 changes/s): on the
  2-instance services, flip the second instance between Consul maintenance and not (40 %),
  between a critical and a passing TTL check (40 %), or register/deregister a third instance
  on another backend (20 %). The first instance always stays passing, so no service ever has
  zero usable servers.

Verification: reloads counted by the HAProxy master (``show proc``: ProcInfo.reloads) and by
status.json; runtime API commands from status.json. Exit non-zero only on harness failure.

    .venv/bin/python bench/reload_under_load.py [--reloads 100] [--runtime 1000] [--clients 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import random
import sys
import threading
import time
from collections import Counter

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
MIN_RELOAD_INTERVAL = 0.2
BURST = 10  # runtime catalog changes per burst ...
BURST_GAP = 0.4  # ... then this long quiet (longer than [apply] quiet = 0.2 s)
TIME_CAP = 300.0  # seconds: the change phase never runs longer


def client_loop(
    pki_dir: str,
    ports: list[int],
    stop: mp.Event,
    out: mp.Queue,
    seed: int,
    max_calls: int,
    max_seconds: float,
) -> None:
    """One client process: fresh TLS connections to random ports until told to stop."""
    from pathlib import Path

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
        kind, _, message = tls_call(ctx, port, timeout=5.0)
        calls += 1
        counts[kind] += 1
        if kind == "ok":
            per_second[int(time.time())] += 1
        elif len(samples) < 100:
            samples.append((time.time(), port, kind, message[:160]))
    out.put({"counts": dict(counts), "samples": samples, "per_second": dict(per_second)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reloads", type=int, default=100)
    parser.add_argument("--runtime", type=int, default=1000, help="runtime catalog changes")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--backends", type=int, default=4)
    args = parser.parse_args()
    print(f"# reload under load  {machine_line()}")
    print(f"# {haproxy_version()}")
    base = workdir()
    loads = [loadavg()]
    with contextlib.ExitStack() as stack:
        pki = make_pki(base / "pki")
        consul = Consul(base / "consul").start(stack)
        print(f"# {consul.version()}; workdir {base}")
        pool = Backends(pki, base).start(stack, args.backends)
        ports = probe_ports(SERVICES + 1)
        overrides = {f"Bench/Svc{k:03d}": ports[k] for k in range(SERVICES)}
        overrides["Bench/Extra"] = ports[SERVICES]
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
        sidecar = Sidecar(
            base / "gw",
            consul.addr,
            overrides=overrides,
            sections={
                "gateway": {"keep_vanished_services": False},
                "apply": {"min_reload_interval": MIN_RELOAD_INTERVAL},
                "certs": {"ca_dir": str(pki.ca_dir)},
            },
        ).start(stack)
        wait_for(lambda: sidecar.status().get("services") == SERVICES, 60, 0.1, "138 services")
        sidecar.wait_idle()
        ctx = client_ctx(pki)
        for port in ports[:SERVICES]:
            kind, _, msg = tls_call(ctx, port)
            if kind != "ok":
                raise HarnessError(f"port {port} does not answer before the run: {kind} {msg}")
        hp = sidecar.haproxy
        info0 = hp.proc()
        st0 = sidecar.status()
        if info0 is None:
            raise HarnessError("no HAProxy master answers")

        # -- load ---------------------------------------------------------------------------
        stop = mp.Event()
        out: mp.Queue = mp.Queue()
        procs = [
            mp.Process(
                target=client_loop,
                args=(
                    str(pki.directory),
                    ports[:SERVICES],
                    stop,
                    out,
                    1000 + i,
                    2_000_000,
                    TIME_CAP + 60,
                ),
            )
            for i in range(args.clients)
        ]
        for p in procs:
            p.start()
        stack.callback(lambda: [p.kill() for p in procs if p.is_alive()])
        time.sleep(3.0)  # warm up
        t_start = time.time()
        loads.append(loadavg())

        # -- changes ------------------------------------------------------------------------
        done = threading.Event()
        errors: list[str] = []
        issued = Counter()

        def reload_driver() -> None:
            try:
                present = False
                deadline = time.monotonic() + TIME_CAP
                reloads_seen = sidecar.status().get("reloads", 0)
                while issued["reload"] < args.reloads and time.monotonic() < deadline:
                    if present:
                        consul.deregister("extra-1")
                    else:
                        consul.register("bench-extra", "extra-1", pool[0].port, "Bench", "Extra")
                    present = not present
                    issued["reload"] += 1
                    st = wait_for(
                        lambda: (s := sidecar.status()).get("reloads", 0) > reloads_seen and s,
                        30,
                        0.01,
                        "the daemon to count a reload",
                    )
                    reloads_seen = st["reloads"]
                    time.sleep(MIN_RELOAD_INTERVAL + 0.02)
                if present:
                    consul.deregister("extra-1")
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
                    time.sleep(BURST_GAP)  # quiet > [apply] quiet: each burst is one apply
            except Exception as exc:
                errors.append(f"runtime driver: {exc}")

        denied: dict[tuple[int, str], int] = {}  # (worker pid, frontend) -> denied connections
        down: set[tuple[int, str, str]] = set()  # (worker pid, backend, server) seen DOWN

        def stats_monitor() -> None:
            """Diagnostics: the current worker's per-frontend denied connections (the
            nbsrv reject rule) and servers its health checks marked DOWN."""
            from sidecar.apply.sockets import send_command

            while not monitor_stop.is_set():
                try:
                    text = send_command(hp.admin_socket, "show info;show stat", timeout=2.0)
                except Exception:
                    time.sleep(0.1)
                    continue
                pid, header = 0, []
                for line in text.splitlines():
                    if line.startswith("Pid:"):
                        pid = int(line.split(":", 1)[1])
                    elif line.startswith("# pxname"):
                        header = line[2:].split(",")
                    elif header and "," in line:
                        row = dict(zip(header, line.split(","), strict=False))
                        if row.get("svname") == "FRONTEND" and row.get("dcon", "0") not in (
                            "",
                            "0",
                        ):
                            denied[(pid, row["pxname"])] = int(row["dcon"])
                        elif row.get("status", "").startswith("DOWN"):
                            down.add((pid, row["pxname"], row["svname"]))
                time.sleep(0.2)

        monitor_stop = threading.Event()
        monitor = threading.Thread(target=stats_monitor, daemon=True)
        monitor.start()
        threads = [threading.Thread(target=reload_driver), threading.Thread(target=runtime_driver)]
        threads[0].start()
        threads[1].start()
        threads[0].join(TIME_CAP + 60)
        done.set()
        threads[1].join(TIME_CAP + 60)
        time.sleep(3.0)  # the last changes settle under load
        t_end = time.time()
        loads.append(loadavg())
        stop.set()
        monitor_stop.set()
        results = [out.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(10)
        info1 = hp.proc()
        st1 = sidecar.status()
        rolled = sidecar.log_count("rolled back")
        deferred = sidecar.log_count("reload deferred")
        if errors:
            raise HarnessError("; ".join(errors))

    counts: Counter[str] = Counter()
    per_second: Counter[int] = Counter()
    samples = []
    for r in results:
        counts.update(r["counts"])
        per_second.update({int(k): v for k, v in r["per_second"].items()})
        samples += r["samples"]
    window = [per_second.get(s, 0) for s in range(int(t_start) + 1, int(t_end))]
    failed = sum(v for k, v in counts.items() if k != "ok")
    total = sum(counts.values())
    duration = t_end - t_start
    master_reloads = (info1.reloads - info0.reloads) if info1 else -1
    rows = [
        ["connections attempted (whole run incl. 3 s warm-up)", total, ""],
        ["successful", counts["ok"], ""],
        ["failed (all kinds)", failed, "0"],
        *[[f"  failed: {kind}", counts.get(kind, 0), "0"] for kind in FAILURE_KINDS],
        [
            "new TLS conn/s during the change phase (mean)",
            f"{sum(window) / max(1, len(window)):.0f}",
            ">= 500 if reachable",
        ],
        ["  per-second min / max", f"{min(window, default=0)} / {max(window, default=0)}", ""],
        ["change phase duration (s)", f"{duration:.1f}", ""],
        ["reloads: HAProxy master (show proc) delta", master_reloads, ">= 100"],
        ["reloads: status.json delta", st1.get("reloads", 0) - st0.get("reloads", 0), ""],
        ["reloads driven by the harness", issued["reload"], ""],
        ["runtime catalog changes made by the harness", issued["runtime"], ">= 1000"],
        [
            "runtime API commands applied (status.json)",
            st1.get("runtime_changes", 0) - st0.get("runtime_changes", 0),
            "",
        ],
        [
            "applies by kind (status.json delta)",
            json.dumps(
                {
                    k: st1.get("applies", {}).get(k, 0) - st0.get("applies", {}).get(k, 0)
                    for k in st1.get("applies", {})
                }
            ),
            "",
        ],
        ["reload failures (status.json)", st1.get("reload_failures", 0), "0"],
        ["rolled back (daemon log)", rolled, "0"],
        ["reloads deferred for old workers (daemon log)", deferred, ""],
        ["old workers at the end", len(info1.old_workers) if info1 else "?", ""],
        ["client processes / backends", f"{args.clients} / {args.backends}", ""],
        ["load average (start, load on, end)", " / ".join(loads), ""],
    ]
    print_table("reload under load", ["figure", "value", "target"], rows)
    if samples:
        print("\nfirst failed connections (time, port, kind, message):")
        for stamp, port, kind, msg in sorted(samples)[:20]:
            print(
                f"  {time.strftime('%H:%M:%S', time.gmtime(stamp))}.{int(stamp % 1 * 1000):03d}Z"
                f" {port} {kind} {msg}"
            )
    if denied:
        print("\nconnections denied by the no-usable-server rule (worker pid, frontend: count):")
        for (pid, fe), n in sorted(denied.items())[:20]:
            print(f"  {pid} {fe}: {n}")
    if down:
        s1 = sorted(d for d in down if d[2] == "s1")
        print(
            f"\nservers seen DOWN by HAProxy's checks (worker, backend, server): {len(down)}; "
            f"first instances (s1, never changed): {len(s1)} {s1[:8]}"
        )
    if master_reloads < args.reloads:
        print(f"NOTE: only {master_reloads} reloads counted by the master")
    print("0 failed connections" if failed == 0 else f"TARGET MISSED: {failed} failed connections")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as exc:
        print(f"harness failure: {exc}", file=sys.stderr)
        sys.exit(2)

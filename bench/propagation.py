"""Propagation: from Consul accepting a passing registration to the first successful TLS
handshake + answer through the gateway.

Setup: a Consul dev agent, a pool of sample TLS backends (child processes), 138 DIRAC services
(128 with one passing instance each; 10 "probe" services whose only instance is critical, so
their frontends exist but reject), and ``sidecar run`` with default [apply] settings except
``[gateway] keep_vanished_services = false`` (so that the new services of part (b) can be
removed again by a reload and the gateway stays at 138-148 frontends).

(a) new instance of an existing service (runtime API path): each trial registers a new instance
    ID of one probe service (round robin over the 10, so each health watch is quiet for ~10 s
    before it is used again) pointing at one of the pool backends; t0 is the moment the
    ``PUT /v1/agent/service/register`` returns; the harness then polls a TLS call (fresh
    connection, client proxy, ~1 ms between attempts, bounded) until the answer comes from that
    backend. The instance is deregistered and the port is seen rejecting again before the next
    trial, which starts ``--gap`` seconds later.
(b) new service (reload path): each trial registers a new DIRAC service (new Consul name, new
    public port from [ports.overrides]) and polls the same way until it answers. Reloads are
    paced by min_reload_interval (default 1 s, kept): the next trial starts only when the
    previous reload finished more than 1 s ago. Every 10 trials the 10 new services are
    deregistered together (one reload) so the gateway stays near 138 frontends.

Before part (a) the gateway reloads twice (a service registered and deregistered), so that (a)
runs on a worker that started from a server-state file, as in a gateway that has been in
service for a while (``--no-reload-first`` skips it). Known core issue met on the way: the
post-reload check (``unbound_ports``) now and then reads the immediate reject of a frontend with
no usable server (the probes) as "not listening" and rolls the reload back; the daemon does not
retry the same config, so the harness nudges it with a server change. Part (b) runs after the
probes are deregistered, without such frontends.

Prints p50/p90/p99/max per part; also the daemon's own apply time (from its JSON log).
Exit status non-zero only when the harness fails.

    .venv/bin/python bench/propagation.py [--trials 100] [--part a|b|ab]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

from common import (
    Backends,
    Consul,
    HarnessError,
    Sidecar,
    client_ctx,
    haproxy_version,
    loadavg,
    machine_line,
    make_pki,
    percentile,
    print_table,
    probe_ports,
    tls_call,
    wait_for,
    workdir,
)

BASE_SERVICES = 128
PROBE_SERVICES = 10
POLL_SLEEP = 0.001
VERBOSE = False


def applied_lines(log: Path, since_wall: float, kind: str) -> list[tuple[float, float]]:
    """(wall time, apply ms) of "applied <kind> in N ms" JSON log lines after ``since_wall``."""
    out: list[tuple[float, float]] = []
    for line in log.read_text(errors="replace").splitlines():
        if f'"applied {kind} in' not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        stamp = time.mktime(time.strptime(rec["time"][:19], "%Y-%m-%dT%H:%M:%S"))
        stamp = stamp - time.timezone + float("0." + rec["time"][20:23])
        if stamp >= since_wall - 0.001:
            ms = float(rec["message"].split(" in ", 1)[1].split(" ms", 1)[0])
            out.append((stamp, ms))
    return out


def poll_until(ctx, port: int, expect: str, timeout: float) -> tuple[float, float, int]:
    """Poll until a call answered by ``expect``; returns (done, attempt start, attempts)."""
    deadline = time.perf_counter() + timeout
    attempts = 0
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        attempts += 1
        kind, answer, _ = tls_call(ctx, port, timeout=1.0)
        if kind == "ok" and answer and answer.get("instance") == expect:
            return time.perf_counter(), start, attempts
        time.sleep(POLL_SLEEP)
    raise HarnessError(f"port {port} not answered by {expect} within {timeout}s")


def wait_rejecting(ctx, port: int, timeout: float = 10.0) -> None:
    wait_for(
        lambda: tls_call(ctx, port, timeout=1.0)[0] != "ok",
        timeout,
        0.005,
        f"port {port} to stop answering",
    )


def summary(name: str, values_ms: list[float], target: str) -> list[str]:
    return [
        name,
        str(len(values_ms)),
        f"{percentile(values_ms, 50):.1f}",
        f"{percentile(values_ms, 90):.1f}",
        f"{percentile(values_ms, 99):.1f}",
        f"{max(values_ms):.1f}",
        target,
    ]


def part_a(
    consul: Consul, sidecar: Sidecar, ctx, pool, probes, trials: int, gap: float
) -> dict[str, list[float]]:
    done_ms, start_ms, apply_ms, attempts_all, applied_at_ms = [], [], [], [], []
    for i in range(trials):
        name, port, _sys, _svc = probes[i % len(probes)]
        backend = pool[i % len(pool)]
        sid = f"propa-{i}"
        wall0 = time.time()
        consul.register(name, sid, backend.port, _sys, _svc, "passing")
        t0 = time.perf_counter()
        wall_t0 = time.time()
        done, start, attempts = poll_until(ctx, port, backend.instance, 10.0)
        done_ms.append((done - t0) * 1000)
        start_ms.append(max(0.0, start - t0) * 1000)
        attempts_all.append(attempts)
        if VERBOSE and done_ms[-1] > 50:
            print(
                f"slow trial {i}: {done_ms[-1]:.1f} ms, PUT returned at "
                f"{time.strftime('%H:%M:%S', time.gmtime(wall_t0))}.{int(wall_t0 % 1 * 1000):03d}Z"
            )
        consul.deregister(sid)
        wait_rejecting(ctx, port)
        lines = applied_lines(sidecar.log_path, wall0, "runtime")
        if lines:
            apply_ms.append(lines[0][1])
            applied_at_ms.append((lines[0][0] - wall_t0) * 1000)
        time.sleep(gap)
    return {
        "done": done_ms,
        "start": start_ms,
        "apply": apply_ms,
        "applied_at": applied_at_ms,
        "attempts": [float(a) for a in attempts_all],
    }


def wait_reload_settled(sidecar: Sidecar, reloads_before: int, pause: float) -> None:
    """Wait for the daemon to count a new reload, then ``pause`` seconds after it ended."""
    st = wait_for(
        lambda: (s := sidecar.status()).get("reloads", 0) > reloads_before and s,
        30.0,
        0.01,
        "the reload to finish",
    )
    rest = st.get("last_apply_at", 0.0) + pause - time.time()
    if rest > 0:
        time.sleep(rest)


def part_b(
    consul: Consul, sidecar: Sidecar, ctx, pool, new_ports, trials: int, pause: float
) -> dict[str, list[float]]:
    done_ms, start_ms, apply_ms, applied_at_ms = [], [], [], []
    batch: list[tuple[str, int]] = []
    for i in range(trials):
        port = new_ports[i % len(new_ports)]
        system, service = "Bench", f"PropB{i % len(new_ports):03d}"
        name, sid = f"bench-propb-{i}", f"propb-{i}"
        backend = pool[i % len(pool)]
        reloads = sidecar.status().get("reloads", 0)
        wall0 = time.time()
        consul.register(name, sid, backend.port, system, service, "passing")
        t0 = time.perf_counter()
        wall_t0 = time.time()
        done, start, _ = poll_until(ctx, port, backend.instance, 15.0)
        done_ms.append((done - t0) * 1000)
        start_ms.append(max(0.0, start - t0) * 1000)
        if VERBOSE and done_ms[-1] > 500:
            print(
                f"slow trial {i}: {done_ms[-1]:.1f} ms, PUT returned at "
                f"{time.strftime('%H:%M:%S', time.gmtime(wall_t0))}.{int(wall_t0 % 1 * 1000):03d}Z"
            )
        batch.append((sid, port))
        wait_reload_settled(sidecar, reloads, pause)
        lines = applied_lines(sidecar.log_path, wall0, "reload")
        if lines:
            apply_ms.append(lines[0][1])
            applied_at_ms.append((lines[0][0] - wall_t0) * 1000)
        if len(batch) == 10 or i == trials - 1:
            reloads = sidecar.status().get("reloads", 0)
            for old_sid, _ in batch:
                consul.deregister(old_sid)
            for _, old_port in batch:
                wait_for(
                    lambda p=old_port: tls_call(ctx, p, timeout=1.0)[0] == "refused",
                    30.0,
                    0.02,
                    f"port {old_port} to be unbound",
                )
            wait_reload_settled(sidecar, reloads, pause + 1.0)  # + token bucket refill
            batch = []
    return {"done": done_ms, "start": start_ms, "apply": apply_ms, "applied_at": applied_at_ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--part", choices=("a", "b", "ab"), default="ab")
    parser.add_argument(
        "--gap",
        type=float,
        default=0.6,
        help="(a) seconds between a trial's end and the next registration",
    )
    parser.add_argument("--backends", type=int, default=4)
    parser.add_argument(
        "--b-pause",
        type=float,
        default=1.1,
        help="(b) seconds after min_reload_interval before the next trial",
    )
    parser.add_argument("--log-level", default="INFO", help="the daemon's log level")
    parser.add_argument(
        "--no-reload-first",
        dest="reload_first",
        action="store_false",
        help="(a) start from the first worker (no reload before part a)",
    )
    parser.add_argument(
        "--keep-probes",
        action="store_true",
        help="(b) keep the 10 rejecting probe frontends during part b",
    )
    parser.add_argument("--verbose", action="store_true", help="print slow trials")
    args = parser.parse_args()
    global VERBOSE
    VERBOSE = args.verbose
    print(f"# propagation  {machine_line()}")
    print(f"# {haproxy_version()}")
    base = workdir()
    results: dict[str, dict[str, list[float]]] = {}
    loads: list[str] = [loadavg()]
    with contextlib.ExitStack() as stack:
        pki = make_pki(base / "pki")
        consul = Consul(base / "consul").start(stack)
        print(f"# {consul.version()}; workdir {base}")
        pool = Backends(pki, base).start(stack, args.backends)
        ports = probe_ports(BASE_SERVICES + PROBE_SERVICES + 10)
        overrides: dict[str, int] = {}
        probes = []
        for k in range(BASE_SERVICES):
            svc = f"Base{k:03d}"
            overrides[f"Bench/{svc}"] = ports[k]
            consul.register(
                f"bench-base-{k}", f"base-{k}", pool[k % len(pool)].port, "Bench", svc, "passing"
            )
        for k in range(PROBE_SERVICES):
            svc = f"Probe{k:02d}"
            port = ports[BASE_SERVICES + k]
            overrides[f"Bench/{svc}"] = port
            consul.register(
                f"bench-probe-{k}", f"probe-{k}-base", pool[0].port, "Bench", svc, "critical"
            )
            probes.append((f"bench-probe-{k}", port, "Bench", svc))
        new_ports = ports[BASE_SERVICES + PROBE_SERVICES :]
        for j, port in enumerate(new_ports):
            overrides[f"Bench/PropB{j:03d}"] = port
        sidecar = Sidecar(
            base / "gw",
            consul.addr,
            overrides=overrides,
            sections={
                "gateway": {"keep_vanished_services": False},
                "log": {"level": args.log_level, "format": "json"},
                "certs": {"ca_dir": str(pki.ca_dir)},
            },
        ).start(stack)
        wait_for(
            lambda: sidecar.status().get("services") == BASE_SERVICES + PROBE_SERVICES,
            60,
            0.1,
            "all services applied",
        )
        ctx = client_ctx(pki)
        wait_for(lambda: tls_call(ctx, ports[0])[0] == "ok", 30, 0.1, "a base service to answer")
        sidecar.wait_idle()
        call_ms = []
        for k in range(50):
            t = time.perf_counter()
            if tls_call(ctx, ports[k % BASE_SERVICES])[0] == "ok":
                call_ms.append((time.perf_counter() - t) * 1000)
        direct_ms, noqa_ms = [], []
        for k in range(50):
            t = time.perf_counter()
            if tls_call(ctx, pool[k % len(pool)].port)[0] == "ok":
                direct_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            if tls_call(ctx, ports[k % BASE_SERVICES], quickack=False)[0] == "ok":
                noqa_ms.append((time.perf_counter() - t) * 1000)
        warm_rollbacks = 0
        if args.reload_first:
            # A gateway in service has reloaded before: register and deregister a service
            # (two reloads) so that part (a) starts from a worker that loaded a state file.
            for step in ("register", "deregister"):
                since = time.time()
                if step == "register":
                    consul.register("bench-warm", "warm-1", pool[0].port, "Bench", "PropB099")
                else:
                    consul.deregister("warm-1")
                for attempt in range(8):
                    st = wait_for(
                        lambda: (x := sidecar.status()).get("last_apply_at", 0) > since and x,
                        30.0,
                        0.02,
                        "the warm-up reload",
                    )
                    if st.get("last_apply_ok"):
                        break
                    # Rolled back by the post-reload check (see the module docstring): the
                    # daemon does not retry the same config; change one server to nudge it.
                    warm_rollbacks += 1
                    since = time.time()
                    consul.register(
                        "bench-base-0", "base-0", pool[1 + attempt % 3].port, "Bench", "Base000"
                    )
                time.sleep(1.5)
            sidecar.wait_idle()
        st0 = sidecar.status()
        if "a" in args.part:
            results["a"] = part_a(consul, sidecar, ctx, pool, probes, args.trials, args.gap)
            loads.append(loadavg())
        st1 = sidecar.status()
        if "b" in args.part and args.keep_probes:
            pass
        elif "b" in args.part:
            # Services with no usable instance reject connections; the daemon's post-reload
            # check (unbound_ports) misreads a fast reject as "not listening" now and then and
            # rolls the reload back (reported as a core bug). Part (b) measures the reload
            # path without them: the 10 probe services are deregistered (one reload) first.
            reloads = sidecar.status().get("reloads", 0)
            for k in range(PROBE_SERVICES):
                consul.deregister(f"probe-{k}-base")
            wait_for(
                lambda: sidecar.status().get("services") == BASE_SERVICES,
                30,
                0.05,
                "the probe services to go",
            )
            wait_reload_settled(sidecar, reloads, 2.0)
        st_b0 = sidecar.status()
        if "b" in args.part:
            interval = sidecar.settings.apply.min_reload_interval
            # interval + 1.1 s: the reload pacing, and a token back in the services watch's
            # bucket (each trial wakes it twice: the registration and the gateway's own
            # re-publication in Consul after the apply).
            results["b"] = part_b(
                consul, sidecar, ctx, pool, new_ports, args.trials, interval + args.b_pause
            )
            loads.append(loadavg())
        st2 = sidecar.status()

    rows = [
        summary("one TLS call through the gateway (steady)", call_ms, ""),
        summary("one TLS call straight to a backend", direct_ms, ""),
        summary("one TLS call via gateway, no TCP_QUICKACK", noqa_ms, ""),
    ]
    if "a" in results:
        r = results["a"]
        rows.append(summary("(a) new instance: PUT return -> answer", r["done"], "p99 <= 50 ms"))
        rows.append(summary("(a) ... -> start of the successful attempt", r["start"], ""))
        rows.append(summary("(a) daemon apply (runtime API), from log", r["apply"], ""))
        rows.append(
            summary("(a) PUT return -> apply logged (log clock, ms res.)", r["applied_at"], "")
        )
    if "b" in results:
        r = results["b"]
        rows.append(summary("(b) new service: PUT return -> answer", r["done"], "p99 <= 500 ms"))
        rows.append(summary("(b) ... -> start of the successful attempt", r["start"], ""))
        rows.append(summary("(b) daemon apply (validate+reload+verify)", r["apply"], ""))
        rows.append(
            summary("(b) PUT return -> apply logged (log clock, ms res.)", r["applied_at"], "")
        )
    print_table("propagation (ms)", ["measure", "n", "p50", "p90", "p99", "max", "target"], rows)
    extra = []
    if "a" in results:
        extra.append(["(a) applies during part", json.dumps(_delta(st0, st1, "applies"))])
        extra.append(
            ["(a) reloads during part", str(st1.get("reloads", 0) - st0.get("reloads", 0))]
        )
        extra.append(
            [
                "(a) poll attempts per trial (median)",
                f"{percentile(results['a']['attempts'], 50):.0f}",
            ]
        )
    if "b" in results:
        extra.append(["(b) applies during part", json.dumps(_delta(st_b0, st2, "applies"))])
        extra.append(
            ["(b) reloads during part", str(st2.get("reloads", 0) - st_b0.get("reloads", 0))]
        )
    extra.append(["warm-up reloads rolled back (and nudged)", str(warm_rollbacks)])
    extra.append(
        [
            "daemon log: post-reload check failures (rolled back)",
            str(sidecar.log_count("frontends not listening")),
        ]
    )
    extra.append(["load average (start, after a, after b)", " / ".join(loads)])
    print_table("context", ["what", "value"], extra)
    ok = True
    if "a" in results and percentile(results["a"]["done"], 99) > 50:
        print("TARGET MISSED: (a) p99 > 50 ms")
        ok = False
    if "b" in results and percentile(results["b"]["done"], 99) > 500:
        print("TARGET MISSED: (b) p99 > 500 ms")
        ok = False
    print("all targets met" if ok else "some targets missed (see above)")
    return 0


def _delta(before: dict, after: dict, key: str) -> dict[str, int]:
    b, a = before.get(key, {}), after.get(key, {})
    return {k: a.get(k, 0) - b.get(k, 0) for k in sorted(a) if a.get(k, 0) != b.get(k, 0)}


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as exc:
        print(f"harness failure: {exc}", file=sys.stderr)
        sys.exit(2)

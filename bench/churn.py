"""Churn: 1,000 instance changes in 10 s across 138 services; applies (by kind), reloads (must
be 0 for pure membership churn), time to converge.

Setup: a Consul dev agent, 138 DIRAC services with 2 passing instances each out of a pool of 4
instance IDs per service (addresses 127.0.0.1:<unique port>, each a listening socket that
accepts and closes, so that HAProxy's TCP checks pass; the figures are about the control
plane), ``sidecar run`` with default settings (servers are dynamic: membership only, no reload
expected).

Churn: 1,000 changes spread evenly over 10 s (4 threads, each owning a quarter of the services,
one change every 40 ms each), each on a random service:
register a pool instance that is absent, deregister one that is present, flip one between
Consul maintenance and not, or flip its TTL check between passing and critical.

Converged: HAProxy's ``show servers state`` (admin socket) equals what the harness's own model
of the final catalog says, for every backend: the set of (address, port, ready|drain) of the
servers not in maintenance. Time to converge is measured from the last change's PUT return.
Exit non-zero only on harness failure.

    .venv/bin/python bench/churn.py [--changes 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

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

from sidecar.core.answers import parse_servers_state
from sidecar.core.model import ServerState

SERVICES = 138
POOL = 4  # instance IDs per service
PORTS: list[int] = []  # instance (k, j) listens on PORTS[POOL * k + j] (a Sink)


class Model:
    """The harness's view of what it wrote to Consul."""

    def __init__(self) -> None:
        # (k, j) -> {"registered": bool, "maint": bool, "critical": bool}
        self.inst = {
            (k, j): {"registered": j < 2, "maint": False, "critical": False}
            for k in range(SERVICES)
            for j in range(POOL)
        }

    def expected(self) -> dict[str, set[tuple[str, int, str]]]:
        want: dict[str, set[tuple[str, int, str]]] = {}
        for (k, j), st in self.inst.items():
            servers = want.setdefault(f"bk_Bench_Churn{k:03d}", set())
            if not st["registered"] or st["critical"]:
                continue
            servers.add(("127.0.0.1", PORTS[POOL * k + j], "drain" if st["maint"] else "ready"))
        return want


def actual(sidecar: Sidecar) -> dict[str, set[tuple[str, int, str]]]:
    have: dict[str, set[tuple[str, int, str]]] = {}
    for a in parse_servers_state(sidecar.haproxy.servers_state()):
        servers = have.setdefault(a.backend, set())
        if a.server.state is not ServerState.MAINT:
            servers.add((a.server.address, a.server.port, a.server.state.value))
    return have


def diff(want: dict, have: dict) -> list[str]:
    out = []
    for name, servers in want.items():
        got = have.get(name, set())
        if got != servers:
            out.append(f"{name}: want {sorted(servers)} have {sorted(got)}")
    return out


def change(consul: Consul, model: Model, rng: random.Random, k: int, j: int) -> str:
    st = model.inst[(k, j)]
    sid = f"c{k}-{j}"
    if not st["registered"]:
        consul.register(f"bench-churn-{k}", sid, PORTS[POOL * k + j], "Bench", f"Churn{k:03d}")
        st.update(registered=True, maint=False, critical=False)
        return "register"
    roll = rng.random()
    if roll < 0.3:
        consul.deregister(sid)
        st.update(registered=False, maint=False, critical=False)
        return "deregister"
    if roll < 0.65:
        consul.maintenance(sid, not st["maint"])
        st["maint"] = not st["maint"]
        return "maintenance"
    consul.set_ttl(sid, "passing" if st["critical"] else "critical")
    st["critical"] = not st["critical"]
    return "ttl"


def apply_times(log: Path, since: float) -> list[float]:
    """Wall times of "applied ..." lines of the daemon's plain log after ``since``."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if " applied " not in line:
            continue
        try:
            stamp = (
                time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000
            )
        except ValueError:
            continue
        if stamp >= since:
            out.append(stamp)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"# churn  {machine_line()}")
    print(f"# {haproxy_version()}")
    base = workdir()
    loads = [loadavg()]
    with contextlib.ExitStack() as stack:
        consul = Consul(base / "consul").start(stack)
        print(f"# {consul.version()}; workdir {base}")
        # Instances on loopback must stay out of the gateway's public ranges (its declared
        # ports and the auto range 20000-29999), or the admission policy refuses them.
        ports = probe_ports(SERVICES, 10000, 20000)
        PORTS[:] = probe_ports(SERVICES * POOL, 30000, 32000)
        Sink(PORTS).start(stack)
        model = Model()
        for (k, j), st in model.inst.items():
            if st["registered"]:
                consul.register(
                    f"bench-churn-{k}", f"c{k}-{j}", PORTS[POOL * k + j], "Bench", f"Churn{k:03d}"
                )
        overrides = {f"Bench/Churn{k:03d}": ports[k] for k in range(SERVICES)}
        sidecar = Sidecar(base / "gw", consul.addr, overrides=overrides).start(stack)
        wait_for(
            lambda: not diff(model.expected(), actual(sidecar)),
            60,
            0.1,
            "the initial state in HAProxy",
        )
        sidecar.wait_idle()
        info0 = sidecar.haproxy.proc()
        st0 = sidecar.status()

        workers = 4  # Consul agent PUTs take ~10 ms: 4 threads, each owning k % 4 == w
        per_worker = args.changes // workers
        interval = args.seconds / per_worker
        kinds: Counter[str] = Counter()
        wall_begin = time.time()
        t_begin = time.monotonic()

        def worker(w: int) -> None:
            rng = random.Random(42 + w)
            mine = [k for k in range(SERVICES) if k % workers == w]
            agent = Consul.__new__(Consul)  # same agent, own HTTP session per thread
            agent.agent, agent.session = consul.agent, requests.Session()
            for n in range(per_worker):
                k, j = rng.choice(mine), rng.randrange(POOL)
                kinds[change(agent, model, rng, k, j)] += 1
                delay = t_begin + (n + 1) * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            agent.session.close()

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        t_last = time.monotonic()
        loads.append(loadavg())
        want = model.expected()
        converged = None
        deadline = t_last + 60
        while time.monotonic() < deadline:
            if not diff(want, actual(sidecar)):
                converged = time.monotonic() - t_last
                break
            time.sleep(0.02)
        remaining = diff(want, actual(sidecar))
        time.sleep(1.5)  # let the status file catch up (heartbeat ~1 s)
        st1 = sidecar.status()
        info1 = sidecar.haproxy.proc()
        held = sidecar.log_count("held back")
        times = apply_times(sidecar.log_path, wall_begin)
        wall_last = wall_begin + (t_last - t_begin)

    during = [t for t in times if t <= wall_last + 0.25]
    gaps = [b - a for a, b in itertools.pairwise(during)]
    applies = {
        k: st1.get("applies", {}).get(k, 0) - st0.get("applies", {}).get(k, 0)
        for k in st1.get("applies", {})
    }
    spent = t_last - t_begin
    rows = [
        ["changes made (by kind)", f"{args.changes} {json.dumps(kinds)}", "1,000 in 10 s"],
        ["time taken to make them (s)", f"{spent:.2f}", ""],
        ["applies (status.json delta, by kind)", json.dumps(applies), ""],
        ["applies in total (incl. trailing and guard re-checks)", sum(applies.values()), ""],
        ["applies while the changes were made (log)", len(during), ""],
        [
            "  gaps between them (s): min / median",
            f"{min(gaps):.2f} / {sorted(gaps)[len(gaps) // 2]:.2f}" if gaps else "-",
            "(no window: changes apply at once)",
        ],
        [
            "reloads: HAProxy master delta",
            (info1.reloads - info0.reloads) if info0 and info1 else "?",
            "0",
        ],
        ["reloads: status.json delta", st1.get("reloads", 0) - st0.get("reloads", 0), "0"],
        [
            "runtime API commands (status.json delta)",
            st1.get("runtime_changes", 0) - st0.get("runtime_changes", 0),
            "",
        ],
        [
            "time to converge after the last change (s)",
            f"{converged:.2f}" if converged is not None else "NOT CONVERGED in 60 s",
            "",
        ],
        ["backends differing at the end", len(remaining), "0"],
        ["daemon log lines: removal held back by the guard", held, ""],
        ["load average (start, after churn)", " / ".join(loads), ""],
    ]
    print_table("churn", ["figure", "value", "target"], rows)
    for line in remaining[:5]:
        print("  differs:", line)
    reloads = st1.get("reloads", 0) - st0.get("reloads", 0)
    print("0 reloads" if reloads == 0 else f"TARGET MISSED: {reloads} reloads")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as exc:
        print(f"harness failure: {exc}", file=sys.stderr)
        sys.exit(2)

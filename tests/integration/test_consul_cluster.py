"""The gateway on a real Consul cluster (issue 14): 3 servers + 1 client agent on loopback.

One cluster, one gateway daemon (talking to the client agent, CS writer on) and one client
calling through the gateway all along are shared by the cases, which run in order:

1. the Raft leader SIGKILLed: serving goes on, a change made after the election is applied;
2. quorum lost (two servers SIGKILLed): the last good state keeps serving, ``sidecar check``
   is not OK and reports the data age, the CS file is never written (not even to undo an edit
   made meanwhile); both servers back: the edit is repaired and a new instance routed;
3. the client agent SIGKILLed and restarted under the daemon: watches resume, the next change
   is applied, HAProxy is not reloaded;
4. a server rejoining with a wiped data dir: nothing dropped, nothing stuck.

Every case asserts 0 failed client calls and prints its figures (``-s``). Instances are
registered on an external node through the catalog API (as catalog sync does), so no agent
restart takes them away. Short Consul timings: ``wait`` 2 s, ``timeout`` 1 s, retries 0.1-1 s.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clusterlib import Cluster, deregister_external, register_external
from faultlib import gateway_on
from gatewaylib import Gateway
from helpers import wait_until
from test_faults_consul import run_cli

from devkit.backend import BackendServer, start_backend
from devkit.pki import DevPKI

pytestmark = pytest.mark.timeout(180)
ALPHA = "Framework/GwAlpha"
DATA = Path(__file__).resolve().parents[1] / "data" / "cs"
FAST_CONSUL = "wait = 2.0\ntimeout = 1.0\nretry_min = 0.1\nretry_max = 1.0\n"
FIGURES: dict[str, Any] = {}
MAX_CALLS, MAX_SECONDS = 20_000, 300.0  # the background client's bounds


class Load:
    """One client calling through the gateway all along (sequential calls, 20 ms apart)."""

    def __init__(self, gw: Gateway, port: int) -> None:
        self.gw, self.port = gw, port
        self.results: list[tuple[float, bool]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        for _ in range(MAX_CALLS):  # bounded in count and time, whatever the fixture does
            if self._stop.wait(0.02) or time.monotonic() > deadline:
                return
            answer = self.gw.try_call(self.port, timeout=3.0)
            self.results.append((time.monotonic(), answer is not None))
            if answer is None:
                self.failures.append(f"{time.monotonic():.2f}")

    def since(self, mark: float) -> tuple[int, int]:
        """(calls made, calls failed) since ``mark``."""
        window = [ok for t, ok in self.results if t >= mark]
        return len(window), window.count(False)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        FIGURES["cluster start s"] = round(c.start(), 2)
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def backends(pki: DevPKI) -> Iterator[list[BackendServer]]:
    started = [
        start_backend(
            pki.host_cert("backend1"),
            pki.host_key("backend1"),
            ca_dir=pki.ca_dir,
            name=ALPHA,
            instance=f"b{n}",
        )
        for n in range(5)
    ]
    try:
        yield started
    finally:
        for backend in started:
            backend.stop()


@pytest.fixture(scope="module")
def setup(
    cluster: Cluster, backends: list[BackendServer], pki: DevPKI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, Load, Path]]:  # fmt: skip
    tmp = tmp_path_factory.mktemp("gw")
    cs_file = tmp / "dirac.cfg"
    shutil.copyfile(DATA / "dirac-v9.cfg", cs_file)
    extra = (
        f'\n[check]\ncatalog_age_warning = 2.0\n\n[dirac_cs]\nenabled = true\nfile = "{cs_file}"\n'
    )
    with gateway_on(tmp / "g", cluster.client, pki, extra, FAST_CONSUL) as gw:
        port = gw.ports[ALPHA]
        register_external(cluster.api(), "b0", backends[0].port, ALPHA)
        gw.wait_routed(port, "b0")
        wait_until(lambda: "dirac-gw.test" in cs_file.read_text(), 20, 0.1, "the first CS write")
        load = Load(gw, port)
        try:
            yield gw, load, cs_file
        finally:
            load.stop()
            made, failed = load.since(0.0)
            FIGURES["calls made / failed (whole module)"] = f"{made} / {failed}"
            print(f"\n[cluster] figures: {json.dumps(FIGURES, indent=1)}")


def diagnosis(gw: Gateway) -> str:
    """What a failed wait needs on a CI machine: the status's CS facts and the log's last
    non-DEBUG lines (the DEBUG retries of the quorum loss drown them in the log tail)."""
    keys = ("catalog_complete", "catalog_error", "catalog_ok_at", "cs_status", "cs_error",
            "lock_holder", "ready", "heartbeat")  # fmt: skip
    status = {key: gw.status().get(key) for key in keys}
    lines = [line for line in gw.log_text().splitlines() if " DEBUG " not in line]
    return f"status: {json.dumps(status)}\nlog (no DEBUG):\n" + "\n".join(lines[-40:])


def change_applied(gw: Gateway, cluster: Cluster, backend: BackendServer, name: str) -> float:
    """Register instance ``name`` now; seconds until the gateway routes a call to it."""
    started = time.monotonic()
    register_external(cluster.api(), name, backend.port, ALPHA)
    gw.wait_routed(gw.ports[ALPHA], name, timeout=30)
    return round(time.monotonic() - started, 2)


def test_leader_killed(setup: tuple[Gateway, Load, Path], cluster: Cluster,
                       backends: list[BackendServer]) -> None:  # fmt: skip
    gw, load, _ = setup
    mark = time.monotonic()
    leader = cluster.leader_server()
    leader.kill()
    cluster.wait_leader(20, not_=leader.rpc_addr)
    FIGURES["1 leader killed: new leader agreed after s"] = round(time.monotonic() - mark, 2)
    FIGURES["1 leader killed: change applied after s"] = change_applied(
        gw, cluster, backends[1], "b1"
    )
    leader.start(attempts=1)  # same data dir: back as a follower
    wait_until(lambda: cluster.voters() == 3, 30, 0.2, "3 healthy voters")
    made, failed = load.since(mark)
    FIGURES["1 leader killed: calls made / failed"] = f"{made} / {failed}"
    assert made > 0 and failed == 0, load.failures


def test_quorum_lost_then_back(setup: tuple[Gateway, Load, Path], cluster: Cluster,
                               backends: list[BackendServer]) -> None:  # fmt: skip
    gw, load, cs_file = setup
    mark = time.monotonic()
    leader = cluster.leader_server()
    down = [s for s in cluster.servers if s is not leader]
    for server in down:
        server.kill()
    edited = ""
    try:
        edited = _quorum_lost(gw, cs_file, mark)
    finally:  # whatever failed, the cases after this one get their cluster back
        back = time.monotonic()
        for server in down:
            if not server.alive():
                server.start(attempts=1)
    cluster.wait_leader(30)
    FIGURES["2 quorum back: leader after s"] = round(time.monotonic() - back, 2)
    try:
        wait_until(lambda: cs_file.read_text() != edited, 30, 0.1, "the CS repaired")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnosis(gw)}") from None
    assert "dips://dirac-gw.test" in cs_file.read_text()
    FIGURES["2 quorum back: CS rewritten after s"] = round(time.monotonic() - back, 2)
    FIGURES["2 quorum back: change applied after s"] = change_applied(
        gw, cluster, backends[2], "b2"
    )
    wait_until(lambda: cluster.voters() == 3, 30, 0.2, "3 healthy voters")
    made, failed = load.since(mark)
    FIGURES["2 quorum lost: calls made / failed"] = f"{made} / {failed}"
    assert made > 0 and failed == 0, load.failures


def _quorum_lost(gw: Gateway, cs_file: Path, mark: float) -> str:
    """While two servers are down: the error reported, check not OK with the data age, and
    an edit of the CS (one a writer with fresh data would undo) left alone; the edited text."""
    wait_until(lambda: gw.status().get("catalog_error"), 20, 0.1, "catalog_error reported")
    FIGURES["2 quorum lost: error reported after s"] = round(time.monotonic() - mark, 2)
    edited = cs_file.read_text().replace("dips://dirac-gw.test", "dips://edited-by-hand.test")
    cs_file.write_text(edited)
    stat = cs_file.stat().st_mtime_ns
    # The watches may report an HTTP 500 at once, and a read may still be answered until the
    # old leader steps down: check names the data's age once it is older than [check]
    # catalog_age_warning (2 s here). Until then it reports Consul's error alone.
    results: list[tuple[int, dict[str, Any]]] = []

    def checked() -> bool:
        code, out, _ = run_cli(gw, "check", "--json")
        results.append((code, json.loads(out.splitlines()[-1])))
        return "catalog data" in results[-1][1]["summary"]

    try:
        wait_until(checked, 20, 0.2, "check reporting the catalog data's age")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {results[-3:]}") from None
    code, result = results[-1]
    assert all(c != 0 and r["status"] != "OK" for c, r in results), results  # never OK
    FIGURES["2 quorum lost: check"] = f"exit {code} {result['status']}: {result['summary'][:120]}"
    deadline = time.monotonic() + 5.0  # two status rounds and more with stale data
    while time.monotonic() < deadline:
        assert cs_file.stat().st_mtime_ns == stat, "CS written from stale data"
        time.sleep(0.1)
    FIGURES["2 quorum lost: data age at the end s"] = round(
        time.time() - gw.status()["catalog_ok_at"], 1
    )
    FIGURES["2 quorum lost: CS writes while down"] = 0
    return edited


def test_client_agent_restarted(setup: tuple[Gateway, Load, Path], cluster: Cluster,
                                backends: list[BackendServer]) -> None:  # fmt: skip
    gw, load, _ = setup
    reloads = gw.reload_count()
    mark = time.monotonic()
    cluster.client.kill()
    cluster.client.start(attempts=1)
    wait_until(lambda: cluster.leader(cluster.client), 30, 0.1, "the client agent rejoined")
    FIGURES["3 client agent restarted: rejoined after s"] = round(time.monotonic() - mark, 2)
    FIGURES["3 client agent restarted: change applied after s"] = change_applied(
        gw, cluster, backends[3], "b3"
    )
    assert gw.reload_count() == reloads
    made, failed = load.since(mark)
    FIGURES["3 client agent restarted: calls made / failed, reloads"] = f"{made} / {failed}, 0"
    assert made > 0 and failed == 0, load.failures


def test_server_rejoins_with_a_wiped_data_dir(
    setup: tuple[Gateway, Load, Path], cluster: Cluster, backends: list[BackendServer]
) -> None:
    gw, load, _ = setup
    mark = time.monotonic()
    leader = cluster.leader_server()
    victim = next(s for s in cluster.servers if s is not leader)
    old_id = victim.node_id()
    victim.kill()
    wait_until(lambda: not cluster.member_alive(victim.node), 20, 0.1, "the server seen failed")
    FIGURES["4 wiped server: seen failed after s"] = round(time.monotonic() - mark, 2)
    shutil.rmtree(victim.workdir / "data")
    rejoin = time.monotonic()
    victim.start(attempts=1)
    # a change while the empty server catches up, then one once it is a voter again
    FIGURES["4 wiped server: change during the rejoin applied after s"] = change_applied(
        gw, cluster, backends[4], "b4"
    )
    wait_until(lambda: cluster.leader(victim) and cluster.voters() == 3, 40, 0.2,
               "the wiped server a healthy voter again")  # fmt: skip
    assert victim.node_id() not in ("", old_id)  # a new node: its data really went
    FIGURES["4 wiped server: healthy voter again after s"] = round(time.monotonic() - rejoin, 2)
    seen = gw.seen(gw.ports[ALPHA], 25)
    assert set(seen) == {f"b{n}" for n in range(5)}, seen  # nothing dropped
    removed = time.monotonic()
    deregister_external(cluster.api(), "b0")  # nothing stuck: a removal goes through too
    gw.wait_only(gw.ports[ALPHA], {f"b{n}" for n in range(1, 5)}, timeout=30)
    FIGURES["4 wiped server: removal applied after s"] = round(time.monotonic() - removed, 2)
    backwards = gw.log_text().count("index went backwards")
    FIGURES["4 wiped server: 'index went backwards' in the log"] = backwards
    made, failed = load.since(mark)
    FIGURES["4 wiped server: calls made / failed"] = f"{made} / {failed}"
    assert made > 0 and failed == 0, load.failures

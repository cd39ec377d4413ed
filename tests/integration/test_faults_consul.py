"""Consul faults on real agents (issue 6): killed and restarted, data wiped (index backwards),
ACL denied, a server that accepts and never answers, slow answers.

The gateway must keep serving its last good state (client calls keep succeeding), report the
age of its data (``catalog_error`` set, ``catalog_ok_at`` frozen while the heartbeat advances),
recover by itself, and not reload when nothing changed. Each test runs its own agent or proxy
(the shared module agent is never disturbed) with short Consul timings:
``wait`` 2 s, ``timeout`` 1 s, retries 0.1-1 s.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from faultlib import FaultAgent, FaultProxy, failed_calls, gateway_on
from gatewaylib import Gateway, sidecar_command
from helpers import wait_until

from devkit.consul_agent import ConsulAgent
from devkit.pki import DevPKI

pytestmark = [pytest.mark.integration]

ALPHA, BETA = "Framework/GwAlpha", "Framework/GwBeta"
FAST_CONSUL = "wait = 2.0\ntimeout = 1.0\nretry_min = 0.1\nretry_max = 1.0\n"
CHECK_FAST = "\n[check]\ncatalog_age_warning = 2.0\n"


def heartbeat_advances(gw: Gateway, seconds: float = 1.5) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two status records ``seconds`` apart (the daemon's main loop must have moved)."""
    first = gw.status()
    wait_until(lambda: gw.status()["heartbeat"] >= first["heartbeat"] + seconds, seconds + 5,
               0.1, "the heartbeat to advance")  # fmt: skip
    return first, gw.status()


def run_cli(gw: Gateway, *args: str, timeout: float = 30.0) -> tuple[int, str, float]:
    started = time.monotonic()
    proc = subprocess.run(
        [*sidecar_command(), "--config", str(gw.config_path), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


# --- killed and restarted with its data ---------------------------------------------------


@pytest.mark.timeout(120)
def test_consul_killed_and_restarted(tmp_path: Path, pki: DevPKI, backend_factory) -> None:
    agent = FaultAgent(tmp_path / "c", dev=False)
    agent.start()
    try:
        with gateway_on(tmp_path / "g", agent, pki, CHECK_FAST, FAST_CONSUL) as gw:
            port = gw.ports[ALPHA]
            gw.register_backend("alpha", backend_factory(instance="a1"), "a1", ALPHA)
            gw.wait_routed(port, "a1")
            wait_until(lambda: gw.status()["catalog_error"] == "", 10, 0.1, "a clean status")
            reloads = gw.reload_count()
            agent.kill()
            wait_until(lambda: gw.status()["catalog_error"], 10, 0.1, "catalog_error reported")
            before, after = heartbeat_advances(gw)
            assert after["catalog_ok_at"] == before["catalog_ok_at"], "data age must grow"
            made, failed = failed_calls(gw, port, 3.0, {"a1"})
            assert made >= 3 and failed == 0, (made, failed)
            code, out, _ = run_cli(gw, "check", "--json")
            result = json.loads(out.splitlines()[-1])
            assert code == 1 and result["status"] == "WARNING", result
            assert "catalog data" in result["summary"] and "consul" in result["summary"]
            assert gw.status()["last_apply_ok"] is True
            agent.start(attempts=1)  # same ports, same data directory
            wait_until(lambda: not gw.status()["catalog_error"], 30, 0.1, "recovery by itself")
            assert gw.status()["catalog_ok_at"] > after["catalog_ok_at"]
            assert gw.reload_count() == reloads, "nothing changed: no reload"
            gw.register_backend("alpha", backend_factory(instance="a2"), "a2", ALPHA)
            gw.wait_routed(port, "a2")
            gw.register_backend("beta", backend_factory(instance="b1"), "b1", BETA)
            gw.wait_routed(gw.ports[BETA], "b1")
    finally:
        agent.stop()


# --- data wiped: the index goes backwards and the catalog comes back empty ----------------


def bump_services_index(agent: ConsulAgent, times: int = 15) -> None:
    """Register and deregister a throwaway service so the services index is well above 0."""
    for n in range(times):
        body = {"Name": "bump", "ID": f"bump{n}", "Port": 1}
        requests.put(f"{agent.http_addr}/v1/agent/service/register", json=body,
                     timeout=5).raise_for_status()  # fmt: skip
        requests.put(f"{agent.http_addr}/v1/agent/service/deregister/bump{n}",
                     timeout=5).raise_for_status()  # fmt: skip


@pytest.mark.timeout(120)
def test_consul_data_wiped(tmp_path: Path, pki: DevPKI, backend_factory) -> None:
    """A dev agent restarted: every registration gone at once, index back near zero."""
    agent = FaultAgent(tmp_path / "c", dev=True)
    agent.start()
    try:
        with gateway_on(tmp_path / "g", agent, pki, "", FAST_CONSUL) as gw:
            port = gw.ports[ALPHA]
            a1 = backend_factory(instance="a1")
            gw.register_backend("alpha", a1, "a1", ALPHA)
            gw.wait_routed(port, "a1")
            bump_services_index(agent)
            wait_until(lambda: gw.status()["catalog_index"] > 20, 10, 0.1, "a high index")
            index = gw.status()["catalog_index"]
            agent.restart(wipe=True)  # the catalog and the agent's own state gone
            gw.wait_log("went backwards")
            wait_until(lambda: 0 < gw.status()["catalog_index"] < index, 10, 0.1, "new index")
            made, failed = failed_calls(gw, port, 3.0, {"a1"})
            # The instances come back as their agents re-register (here: the test does it).
            gw.register_backend("alpha", a1, "a1", ALPHA)
            gw.register_backend("beta", backend_factory(instance="b1"), "b1", BETA)
            gw.wait_routed(gw.ports[BETA], "b1")
            after_made, after_failed = failed_calls(gw, port, 1.0, {"a1"})
            assert failed == 0, f"{failed}/{made} calls failed after the wipe"
            assert after_failed == 0, (after_made, after_failed)
    finally:
        agent.stop()


# --- ACL denied ---------------------------------------------------------------------------

ROOT = "root-" + uuid.uuid4().hex
ACL = {
    "primary_datacenter": "dc1",
    "acl": {"enabled": True, "default_policy": "deny", "down_policy": "extend-cache",
            "tokens": {"master": ROOT, "agent": ROOT}},
}  # fmt: skip


def acl_put(agent: ConsulAgent, path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = requests.put(f"{agent.http_addr}{path}", json=body,
                        headers={"X-Consul-Token": ROOT}, timeout=5)  # fmt: skip
    resp.raise_for_status()
    result: dict[str, Any] = resp.json()
    return result


@pytest.fixture(scope="module")
def acl_agent(tmp_path_factory: pytest.TempPathFactory) -> Any:
    agent = FaultAgent(tmp_path_factory.mktemp("acl"), dev=True, extra=ACL)
    agent.headers = {"X-Consul-Token": ROOT}
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


def register_as_root(agent: ConsulAgent, gw: Gateway, label: str, instance: str, port: int,
                     dirac: str) -> str:  # fmt: skip
    system, service = dirac.split("/")
    sid = f"{gw.prefix}-{instance}"
    body = {"Name": gw.consul_name(label), "ID": sid, "Address": "127.0.0.1", "Port": port,
            "Tags": ["dirac"], "Meta": {"dirac_system": system, "dirac_service": service},
            "Check": {"CheckID": f"service:{sid}", "TTL": "1h", "Status": "passing"}}  # fmt: skip
    resp = requests.put(f"{agent.http_addr}/v1/agent/service/register", json=body,
                        headers={"X-Consul-Token": ROOT}, timeout=5)  # fmt: skip
    resp.raise_for_status()
    return sid


def reader_token(agent: ConsulAgent, rules: str) -> dict[str, Any]:
    policy = acl_put(agent, "/v1/acl/policy", {"Name": "p" + uuid.uuid4().hex[:8], "Rules": rules})
    return acl_put(agent, "/v1/acl/token", {"Policies": [{"ID": policy["ID"]}]})


READ_ALL = 'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }\n'
NODES_ONLY = 'node_prefix "" { policy = "read" }\n'


def acl_gateway(tmp_path: Path, agent: ConsulAgent, pki: DevPKI, token: str) -> Any:
    token_file = tmp_path / "token"
    tmp_path.mkdir(parents=True, exist_ok=True)
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    consul = FAST_CONSUL + f'token_file = "{token_file}"\n'
    return gateway_on(tmp_path / "g", agent, pki, "", consul)


@pytest.mark.timeout(90)
def test_acl_token_revoked_keeps_serving(
    tmp_path: Path, pki: DevPKI, acl_agent: ConsulAgent, backend_factory
) -> None:
    token = reader_token(acl_agent, READ_ALL)
    with acl_gateway(tmp_path, acl_agent, pki, token["SecretID"]) as gw:
        port = gw.ports[ALPHA]
        register_as_root(acl_agent, gw, "alpha", "a1", backend_factory(instance="a1").port, ALPHA)
        gw.wait_routed(port, "a1")
        reloads = gw.reload_count()
        resp = requests.delete(f"{acl_agent.http_addr}/v1/acl/token/{token['AccessorID']}",
                               headers={"X-Consul-Token": ROOT}, timeout=5)  # fmt: skip
        resp.raise_for_status()
        wait_until(lambda: "403" in gw.status()["catalog_error"], 15, 0.1, "403 reported")
        assert "ACL" in gw.status()["catalog_error"]
        before, after = heartbeat_advances(gw)
        assert after["catalog_ok_at"] == before["catalog_ok_at"]
        made, failed = failed_calls(gw, port, 2.0, {"a1"})
        assert failed == 0, (made, failed)
        assert gw.reload_count() == reloads
        assert token["SecretID"] not in gw.log_text()


@pytest.mark.timeout(90)
def test_acl_token_without_service_read(
    tmp_path: Path, pki: DevPKI, acl_agent: ConsulAgent, backend_factory
) -> None:
    """default deny + a token that may not read services: Consul answers 200 with the
    services filtered out (an empty catalog), not 403. Observed, reported in reliability.md."""
    token = reader_token(acl_agent, READ_ALL)
    with acl_gateway(tmp_path, acl_agent, pki, token["SecretID"]) as gw:
        port = gw.ports[ALPHA]
        register_as_root(acl_agent, gw, "alpha", "a1", backend_factory(instance="a1").port, ALPHA)
        gw.wait_routed(port, "a1")
        nodes_only = acl_put(acl_agent, "/v1/acl/policy", {"Name": "n" + uuid.uuid4().hex[:8],
                                                            "Rules": NODES_ONLY})  # fmt: skip
        acl_put(acl_agent, f"/v1/acl/token/{token['AccessorID']}",
                {"Policies": [{"ID": nodes_only["ID"]}]})  # fmt: skip
        # Consul itself: 200 and an empty catalog for this token.
        seen = requests.get(f"{acl_agent.http_addr}/v1/catalog/services",
                            headers={"X-Consul-Token": token["SecretID"]}, timeout=5)  # fmt: skip
        assert seen.status_code == 200 and seen.json() == {}
        # Any catalog write moves the index, so the watch hands the filtered answer on: the
        # answer lacks the "consul" service (consul.canary_service) and counts as an error.
        # A query parked before the policy change still answers with the old rights: keep
        # writing until an answer under the new rights comes back.
        writes = iter(range(20))

        def reported() -> bool:
            register_as_root(acl_agent, gw, "other", f"o{next(writes)}", 1, BETA)
            return "service:read" in gw.status()["catalog_error"]

        wait_until(reported, 15, 0.5, "the filtered catalog reported")
        made, failed = failed_calls(gw, port, 4.0, {"a1"})
        status = gw.status()
        assert failed == 0, (
            f"{failed}/{made} calls failed once the token lost service:read; "
            f"status problems={status['problems'][:3]} error={status['catalog_error']!r}"
        )


# --- a server that accepts and never answers; slow answers --------------------------------


@pytest.mark.timeout(120)
def test_silent_consul_does_not_hang(
    tmp_path: Path, pki: DevPKI, consul_agent: ConsulAgent, backend_factory
) -> None:
    upstream = ("127.0.0.1", consul_agent.ports["http"])
    proxy = FaultProxy(upstream)
    try:
        with gateway_on(tmp_path, consul_agent, pki, CHECK_FAST, FAST_CONSUL,
                        consul_address=proxy.address) as gw:  # fmt: skip
            port = gw.ports[ALPHA]
            gw.register_backend("alpha", backend_factory(instance="a1"), "a1", ALPHA)
            gw.wait_routed(port, "a1")
            reloads = gw.reload_count()
            proxy.set_mode("silent")
            # wait 2 s + wait/16 + timeout 1 s: the parked query gives up within ~3.2 s
            wait_until(lambda: "Timeout" in gw.status()["catalog_error"], 10, 0.1,
                       "the request timeout to fire")  # fmt: skip
            before, after = heartbeat_advances(gw)
            assert after["catalog_ok_at"] == before["catalog_ok_at"]
            made, failed = failed_calls(gw, port, 2.0, {"a1"})
            assert failed == 0, (made, failed)
            code, out, took = run_cli(gw, "check", "--json")
            result = json.loads(out.splitlines()[-1])
            assert code in (1, 2) and "catalog" in result["summary"], result
            assert took < 15, took
            code, out, took = run_cli(gw, "render", timeout=20)
            assert code == 1 and "error:" in out and "Timeout" in out, out[-400:]
            assert took < 1.0 + 8.0, f"render took {took:.1f}s with timeout 1s"
            proxy.set_mode("pass")
            wait_until(lambda: not gw.status()["catalog_error"], 20, 0.1, "recovery by itself")
            assert gw.reload_count() == reloads
            gw.register_backend("alpha", backend_factory(instance="a2"), "a2", ALPHA)
            gw.wait_routed(port, "a2")
    finally:
        proxy.close()


@pytest.mark.timeout(90)
def test_a_partition_is_seen_by_the_probe_and_healed_without_waiting_out_the_parked_queries(
    tmp_path: Path, pki: DevPKI, consul_agent: ConsulAgent, backend_factory
) -> None:
    """With a long ``wait`` (60 s here, 10 min by default) a connection that dies unseen
    would hide for the whole parked wait: the probe (every 1 s) reports the agent failing,
    and once it answers again every parked query is sent again on a fresh connection, so a
    change made during the partition is routed within seconds, not after ``wait``."""
    proxy = FaultProxy(("127.0.0.1", consul_agent.ports["http"]))
    consul = "wait = 60.0\ntimeout = 1.0\nretry_min = 0.1\nretry_max = 1.0\nprobe_interval = 1.0\n"
    try:
        with gateway_on(tmp_path, consul_agent, pki, CHECK_FAST, consul,
                        consul_address=proxy.address) as gw:  # fmt: skip
            port = gw.ports[ALPHA]
            gw.register_backend("alpha", backend_factory(instance="a1"), "a1", ALPHA)
            gw.wait_routed(port, "a1")
            reloads = gw.reload_count()
            proxy.blackhole()
            started = time.monotonic()
            # probe_interval 1 s + timeout 1 s: the parked queries alone would take ~65 s
            wait_until(lambda: "/v1/status/leader" in gw.status()["catalog_error"], 10, 0.1,
                       "the probe to report the agent")  # fmt: skip
            seen = time.monotonic() - started
            before, after = heartbeat_advances(gw)
            assert after["catalog_ok_at"] == before["catalog_ok_at"]
            made, failed = failed_calls(gw, port, 1.0, {"a1"})
            assert failed == 0, (made, failed)
            gw.register_backend("alpha", backend_factory(instance="a2"), "a2", ALPHA)
            proxy.heal()  # the watches' connections stay dead: only a renewal sees a2
            healed = time.monotonic()
            gw.wait_routed(port, "a2", timeout=15)
            routed = time.monotonic() - healed
            wait_until(lambda: not gw.status()["catalog_error"], 10, 0.1, "the error cleared")
            assert gw.reload_count() == reloads
            print(f"\n[partition] reported after {seen:.1f} s; a2 routed {routed:.1f} s "
                  "after the heal")
    finally:
        proxy.close()


@pytest.mark.timeout(90)
def test_slow_consul_still_converges(
    tmp_path: Path, pki: DevPKI, consul_agent: ConsulAgent, backend_factory
) -> None:
    proxy = FaultProxy(("127.0.0.1", consul_agent.ports["http"]), mode="slow", delay=0.4)
    try:
        with gateway_on(tmp_path, consul_agent, pki, "", FAST_CONSUL,
                        consul_address=proxy.address) as gw:  # fmt: skip
            started = time.monotonic()
            gw.register_backend("alpha", backend_factory(instance="a1"), "a1", ALPHA)
            gw.wait_routed(gw.ports[ALPHA], "a1")
            gw.register_backend("beta", backend_factory(instance="b1"), "b1", BETA)
            gw.wait_routed(gw.ports[BETA], "b1")
            assert time.monotonic() - started < 30
            assert gw.status()["last_apply_ok"] is True
    finally:
        proxy.close()

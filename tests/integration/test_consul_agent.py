"""The disposable Consul dev agent and the registration helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests
from helpers import wait_until

from devkit.consul_agent import (
    ConsulAgent,
    deregister,
    find_consul,
    health,
    maintenance,
    register,
    set_ttl,
)

META = {"dirac_system": "Framework", "dirac_service": "Sample", "dirac_protocol": "dips"}


def _statuses(agent: ConsulAgent, name: str) -> dict[str, set[str]]:
    return {
        entry["Service"]["ID"]: {check["Status"] for check in entry["Checks"]}
        for entry in health(agent.http_addr, name)
    }


def test_agent_is_up(consul_agent: ConsulAgent) -> None:
    leader = requests.get(f"{consul_agent.http_addr}/v1/status/leader", timeout=5).json()
    assert leader.startswith("127.0.0.1:")
    assert consul_agent.http_addr.startswith("http://127.0.0.1:")
    assert consul_agent.alive()


def test_register_and_flip_ttl(consul_agent: ConsulAgent) -> None:
    addr = consul_agent.http_addr
    check = register(addr, "dirac-ttl", "ttl-1", "127.0.0.1", 20001, META)
    register(addr, "dirac-ttl", "ttl-2", "127.0.0.1", 20002, META, check="critical")
    assert check == "service:ttl-1"
    wait_until(lambda: len(_statuses(consul_agent, "dirac-ttl")) == 2, 10)
    entries = health(addr, "dirac-ttl")
    assert {e["Service"]["Port"] for e in entries} == {20001, 20002}
    assert all(e["Service"]["Tags"] == ["dirac"] for e in entries)
    assert entries[0]["Service"]["Meta"] == META
    passing = [e["Service"]["ID"] for e in health(addr, "dirac-ttl", passing=True)]
    assert passing == ["ttl-1"]

    set_ttl(addr, check, "critical", note="test")
    wait_until(lambda: "critical" in _statuses(consul_agent, "dirac-ttl")["ttl-1"], 10)
    assert health(addr, "dirac-ttl", passing=True) == []
    set_ttl(addr, "service:ttl-2", "warning")
    set_ttl(addr, check, "passing")
    wait_until(lambda: _statuses(consul_agent, "dirac-ttl")["ttl-2"] == {"passing", "warning"})

    with pytest.raises(ValueError):
        set_ttl(addr, check, "bogus")


def test_maintenance_and_deregister(consul_agent: ConsulAgent) -> None:
    addr = consul_agent.http_addr
    register(addr, "dirac-maint", "maint-1", "127.0.0.1", 20011, META)
    wait_until(lambda: health(addr, "dirac-maint", passing=True), 10)
    maintenance(addr, "maint-1", True, reason="drain")
    wait_until(lambda: not health(addr, "dirac-maint", passing=True), 10)
    ids = {c["CheckID"] for c in health(addr, "dirac-maint")[0]["Checks"]}
    assert "_service_maintenance:maint-1" in ids
    maintenance(addr, "maint-1", False)
    wait_until(lambda: health(addr, "dirac-maint", passing=True), 10)
    deregister(addr, "maint-1")
    wait_until(lambda: health(addr, "dirac-maint") == [], 10)


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    agent = ConsulAgent(workdir=tmp_path / "c", binary=find_consul(), node="stop-test")
    with agent:
        pid = agent.pid
        http = agent.http_addr
        assert requests.get(f"{http}/v1/status/leader", timeout=5).ok
    assert not agent.alive()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{http}/v1/status/leader", timeout=2)
    assert (tmp_path / "c" / "consul.log").stat().st_size > 0


def test_temporary_workdir_is_removed() -> None:
    agent = ConsulAgent(binary=find_consul(), node="tmp-test").start()
    workdir = agent.workdir
    assert (workdir / "ports.json").is_file()
    agent.stop()
    assert not workdir.exists()

"""A real Consul cluster on loopback for the issue 14 tests: 3 servers and 1 client agent.

Each agent has its own loopback address (127.<n>.14.2-5, <n> drawn per run so that two runs
never meet), its own data directory and free ports; ``performance { raft_multiplier = 1 }``
and a quicker gossip keep elections and failure detection to about a second. Agents can be
SIGKILLed, restarted on the same address, ports and data, or restarted with the data wiped
(``FaultAgent.restart``). Every process is stopped by PID (``Cluster.stop``).
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
from faultlib import FaultAgent
from helpers import wait_until

from devkit.ports import free_port

GOSSIP = {"probe_interval": "500ms", "probe_timeout": "250ms", "suspicion_mult": 3}


class ClusterAgent(FaultAgent):
    """One agent of the cluster (server or client) on its own loopback address."""

    def __init__(self, workdir: Path, ip: str, node: str, server: bool, join: list[str]) -> None:
        super().__init__(workdir, dev=False, node=node)
        self.ip, self.server, self.join = ip, server, join

    @property
    def http_addr(self) -> str:
        return f"http://{self.ip}:{self.ports['http']}"

    @property
    def serf_addr(self) -> str:
        return f"{self.ip}:{self.ports['serf_lan']}"

    @property
    def rpc_addr(self) -> str:
        return f"{self.ip}:{self.ports['server']}"

    def node_id(self) -> str:
        try:
            body = requests.get(f"{self.http_addr}/v1/agent/self", timeout=2.0).json()
            return str(body["Config"]["NodeID"])
        except (requests.RequestException, ValueError, KeyError, TypeError):
            return ""

    def reserve(self) -> None:
        """Free ports on this agent's address (before any agent starts: they join each other)."""
        self.ports = {name: free_port(self.ip) for name in ("http", "serf_lan", "server")}

    def _write_config(self) -> Path:
        body: dict[str, Any] = {
            "node_name": self.node,
            "datacenter": "dc1",
            "data_dir": str(self.workdir / "data"),
            "bind_addr": self.ip,
            "client_addr": self.ip,
            "server": self.server,
            "ports": {**self.ports, "dns": -1, "serf_wan": -1, "grpc": -1, "https": -1},
            "retry_join": [a for a in self.join if a != self.serf_addr],
            "retry_interval": "1s",
            "performance": {"raft_multiplier": 1},
            "gossip_lan": GOSSIP,
            "leave_on_terminate": False,
            "disable_update_check": True,
            "log_level": "info",
        }
        if self.server:  # a rejoining server is a voter again after 1 s instead of 10 s
            body["bootstrap_expect"] = 3
            body["autopilot"] = {"server_stabilization_time": "1s"}
        config = self.workdir / "agent.json"
        config.write_text(json.dumps(body, indent=2))
        return config

    def _spawn(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        cmd = [self.binary, "agent", "-config-file", str(config)]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def _ready(self) -> bool:
        """The HTTP API answers (a server alone has no leader yet: the cluster waits for it)."""
        try:
            return requests.get(f"{self.http_addr}/v1/agent/self", timeout=1.0).ok
        except requests.RequestException:
            return False


class Cluster:
    """3 servers + 1 client agent; the gateway talks to ``client``."""

    def __init__(self, workdir: Path) -> None:
        net = random.randint(20, 250)
        self.servers: list[ClusterAgent] = []
        join: list[str] = []
        for n in range(3):
            ip = f"127.{net}.14.{n + 2}"
            self.servers.append(ClusterAgent(workdir / f"s{n + 1}", ip, f"srv{n + 1}", True, join))
        self.client = ClusterAgent(workdir / "client", f"127.{net}.14.5", "client1", False, join)
        for agent in self.agents:
            agent.reserve()
        join.extend(s.serf_addr for s in self.servers)

    @property
    def agents(self) -> list[ClusterAgent]:
        return [*self.servers, self.client]

    def start(self, timeout: float = 60.0) -> float:
        """Start every agent, wait for a leader known to the client; returns the seconds."""
        started = time.monotonic()
        for agent in self.agents:
            agent.start(attempts=1)
        self.wait_leader(timeout)
        wait_until(lambda: self.client_sees_node(self.client.node), timeout, 0.1, "client synced")
        return time.monotonic() - started

    def stop(self) -> None:
        for agent in self.agents:
            with contextlib.suppress(Exception):
                agent.stop(timeout=10, keep_workdir=True)

    def leader(self, via: ClusterAgent | None = None) -> str:
        """The leader's RPC address as ``via`` (default: the client) sees it; "" if none."""
        agent = via or self.client
        try:
            reply = requests.get(f"{agent.http_addr}/v1/status/leader", timeout=1.0)
            return str(reply.json()) if reply.ok else ""
        except (requests.RequestException, ValueError):
            return ""

    def leader_server(self) -> ClusterAgent:
        address = wait_until(self.leader, 30, 0.05, "a leader")
        return next(s for s in self.servers if s.rpc_addr == address)

    def wait_leader(self, timeout: float = 30.0, not_: str = "") -> str:
        """Wait until every live server and the client agree on one leader (not ``not_``)."""

        def agreed() -> str:
            views = {self.leader(a) for a in self.agents if a.alive()}
            one = next(iter(views)) if len(views) == 1 else ""
            return one if one and one != not_ else ""

        return wait_until(agreed, timeout, 0.05, "one leader agreed by every live agent")

    def voters(self) -> int:
        """Healthy voters in the Raft configuration, as the leader reports them."""
        try:
            reply = requests.get(f"{self.client.http_addr}/v1/operator/autopilot/health",
                                 timeout=2.0)  # fmt: skip
            body = reply.json()
        except (requests.RequestException, ValueError):
            return 0
        servers = body.get("Servers") or [] if isinstance(body, dict) else []
        return sum(1 for s in servers if s.get("Healthy") and s.get("Voter"))

    def member_alive(self, node: str) -> bool:
        """Whether the client agent's gossip sees ``node`` alive (serf status 1)."""
        try:
            members = requests.get(f"{self.client.http_addr}/v1/agent/members", timeout=2.0)
            return any(m["Name"] == node and m["Status"] == 1 for m in members.json())
        except (requests.RequestException, ValueError, KeyError, TypeError):
            return False

    def client_sees_node(self, node: str) -> bool:
        try:
            return requests.get(f"{self.client.http_addr}/v1/catalog/node/{node}",
                                timeout=2.0).json() is not None  # fmt: skip
        except (requests.RequestException, ValueError):
            return False

    def api(self) -> str:
        """An agent address that answers, for the test's own registrations."""
        for agent in (self.client, *self.servers):
            if agent.alive() and self.leader(agent):
                return agent.http_addr
        raise AssertionError("no agent with a leader to register through")


def register_external(api: str, service_id: str, port: int, dirac: str, node: str = "k8s") -> None:
    """An instance on an external node (no agent, no serfHealth: as catalog sync does)."""
    system, service = dirac.split("/")
    body = {
        "Node": node,
        "Address": "127.0.0.1",
        "Service": {
            "ID": service_id,
            "Service": f"dirac-{system}-{service}".lower(),
            "Address": "127.0.0.1",
            "Port": port,
            "Tags": ["dirac"],
            "Meta": {"dirac_system": system, "dirac_service": service},
        },
    }
    requests.put(f"{api}/v1/catalog/register", json=body, timeout=5).raise_for_status()


def deregister_external(api: str, service_id: str, node: str = "k8s") -> None:
    body = {"Node": node, "ServiceID": service_id}
    requests.put(f"{api}/v1/catalog/deregister", json=body, timeout=5).raise_for_status()

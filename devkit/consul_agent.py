"""A disposable Consul dev agent for the demo and the integration tests, plus plain-HTTP helpers
to register DIRAC-like service instances with TTL checks and flip their health.

``consul agent -dev`` on 127.0.0.1 with free ports (http, serf_lan, server; dns, serf_wan, grpc
and https disabled with -1 in a JSON config), its own data dir and log file. :meth:`start`
waits (bounded) for a leader and for the node to be in the catalog; :meth:`stop` sends SIGTERM
to the PID, then SIGKILL. Deliberately independent of the ``consul`` Python package.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import requests

from devkit.ports import free_port
from devkit.procs import stop_process

REPO = Path(__file__).resolve().parents[2]
HTTP_TIMEOUT = 5.0
_TTL_ENDPOINT = {"passing": "pass", "warning": "warn", "critical": "fail"}


def find_consul() -> str:
    """The consul binary: ``consul`` on PATH, else ``<repo>/.deps/bin/consul``."""
    found = shutil.which("consul")
    if found:
        return found
    local = REPO / ".deps" / "bin" / "consul"
    if local.is_file():
        return str(local)
    raise FileNotFoundError("consul not found on PATH nor in .deps/bin")


class ConsulAgentError(RuntimeError):
    """The agent did not start (see the log file named in the message)."""


class ConsulAgent:
    """``consul agent -dev`` bound to 127.0.0.1 on free ports. Use as a context manager."""

    def __init__(
        self,
        workdir: Path | str | None = None,
        node: str = "sidecar-dev",
        binary: str | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="consul-dev-"))
        self.node = node
        self.binary = binary or find_consul()
        self.start_timeout = start_timeout
        self.ports: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def http_addr(self) -> str:
        """``http://127.0.0.1:<http port>``."""
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "consul.log"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("agent not started")
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> Path:
        self.ports = {name: free_port() for name in ("http", "serf_lan", "server")}
        ports: dict[str, int] = {"dns": -1, "serf_wan": -1, "grpc": -1, "https": -1}
        config = self.workdir / "ports.json"
        config.write_text(json.dumps({"ports": {**self.ports, **ports}}, indent=2))
        return config

    def _spawn(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        cmd = [
            self.binary, "agent", "-dev", "-node", self.node,
            "-bind", "127.0.0.1", "-client", "127.0.0.1",
            "-data-dir", str(self.workdir / "data"), "-config-file", str(config),
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def _ready(self) -> bool:
        try:
            leader = requests.get(f"{self.http_addr}/v1/status/leader", timeout=1.0)
            if leader.status_code != 200 or not leader.json():
                return False
            node = requests.get(f"{self.http_addr}/v1/catalog/node/{self.node}", timeout=1.0)
            return node.status_code == 200 and node.json() is not None
        except (requests.RequestException, ValueError):
            return False

    def start(self, attempts: int = 3) -> Self:
        """Start and wait for a leader and a synced node; retried if a port was taken."""
        for _ in range(attempts):
            self._spawn()
            deadline = time.monotonic() + self.start_timeout
            while time.monotonic() < deadline and self.alive():
                if self._ready():
                    return self
                time.sleep(0.1)
            self._terminate()
        raise ConsulAgentError(f"consul agent did not become ready; see {self.log_path}")

    def _terminate(self, timeout: float = 10.0) -> None:
        stop_process(self._proc, timeout)

    def stop(self, timeout: float = 10.0, keep_workdir: bool = False) -> None:
        """SIGTERM by PID, SIGKILL after ``timeout``; remove a temporary workdir."""
        self._terminate(timeout)
        if self._own_workdir and not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start() if not self.alive() else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- plain HTTP helpers --------------------------------------------------------------------


def _put(url: str, body: Any = None, params: Mapping[str, str] | None = None) -> None:
    resp = requests.put(url, json=body, params=params, timeout=HTTP_TIMEOUT)
    resp.raise_for_status()


def check_id_for(service_id: str) -> str:
    """The ID of the TTL check that :func:`register` attaches to ``service_id``."""
    return f"service:{service_id}"


def register(
    agent_addr: str,
    name: str,
    service_id: str,
    address: str,
    port: int,
    meta: Mapping[str, str] | None = None,
    tags: Iterable[str] = ("dirac",),
    check: str | None = "passing",
    ttl: str = "1h",
) -> str | None:
    """Register an instance with the local agent; returns the TTL check ID (None: no check).

    ``check`` is the initial status (passing, warning, critical); flip it with :func:`set_ttl`.
    """
    body: dict[str, Any] = {
        "Name": name,
        "ID": service_id,
        "Address": address,
        "Port": port,
        "Tags": list(tags),
        "Meta": dict(meta or {}),
    }
    check_id = None
    if check is not None:
        check_id = check_id_for(service_id)
        body["Check"] = {"CheckID": check_id, "Name": f"{name} TTL", "TTL": ttl, "Status": check}
    _put(f"{agent_addr}/v1/agent/service/register", body)
    return check_id


def set_ttl(agent_addr: str, check_id: str, status: str, note: str = "") -> None:
    """Set a TTL check to passing/warning/critical (also accepts pass/warn/fail)."""
    endpoint = _TTL_ENDPOINT.get(status, status)
    if endpoint not in _TTL_ENDPOINT.values():
        raise ValueError(f"unknown check status {status!r}")
    _put(f"{agent_addr}/v1/agent/check/{endpoint}/{check_id}", params={"note": note})


def deregister(agent_addr: str, service_id: str) -> None:
    """Remove an instance from the agent (and so from the catalog)."""
    _put(f"{agent_addr}/v1/agent/service/deregister/{service_id}")


def maintenance(agent_addr: str, service_id: str, enable: bool, reason: str = "") -> None:
    """Put an instance into (or take it out of) Consul maintenance mode."""
    params = {"enable": "true" if enable else "false", "reason": reason}
    _put(f"{agent_addr}/v1/agent/service/maintenance/{service_id}", params=params)


def health(agent_addr: str, name: str, passing: bool = False) -> list[dict[str, Any]]:
    """``/v1/health/service/<name>`` entries (``passing``: only instances passing all checks)."""
    params = {"passing": "1"} if passing else {}
    resp = requests.get(
        f"{agent_addr}/v1/health/service/{name}", params=params, timeout=HTTP_TIMEOUT
    )
    resp.raise_for_status()
    entries: list[dict[str, Any]] = resp.json()
    return entries

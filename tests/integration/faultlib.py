"""Fault injection helpers for the issue 6 tests: a Consul agent that can be killed and brought
back on the same ports (with or without its data), a TCP proxy that can go silent or slow, and
a gateway built on any agent.

Everything binds 127.0.0.1 only; every process is stopped by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from gatewaylib import Gateway, unique_prefix

from devkit.consul_agent import ConsulAgent, find_consul
from devkit.pki import DevPKI
from devkit.ports import free_port


class FaultAgent(ConsulAgent):
    """A Consul agent that keeps its ports across restarts.

    ``dev=True``: ``consul agent -dev`` (data in memory: a restart wipes the catalog and its
    index starts again from the bottom). ``dev=False``: a single bootstrapping server with a
    data directory on disk (a restart keeps registrations; the index goes on). ``extra`` is
    merged into the JSON config (ACLs, TLS...).
    """

    def __init__(self, workdir: Path, dev: bool = True, extra: dict[str, Any] | None = None,
                 node: str = "fault-node") -> None:  # fmt: skip
        super().__init__(workdir=workdir, node=node, binary=find_consul(), start_timeout=30.0)
        self.dev = dev
        self.extra = extra or {}
        self.scheme = "http"
        self.headers: dict[str, str] = {}  # e.g. an ACL token for _ready()

    @property
    def http_addr(self) -> str:
        if self.scheme == "https":
            return f"https://127.0.0.1:{self.ports['https']}"
        return f"http://127.0.0.1:{self.ports['http']}"

    def _write_config(self) -> Path:
        if not self.ports:
            names = ("serf_lan", "server", "https" if self.scheme == "https" else "http")
            self.ports = {name: free_port() for name in names}
        disabled = {"dns": -1, "serf_wan": -1, "grpc": -1, "https": -1, "http": -1}
        config = self.workdir / "agent.json"
        body: dict[str, Any] = {"ports": {**disabled, **self.ports}}
        body.update(self.extra)
        config.write_text(json.dumps(body, indent=2))
        return config

    def _spawn(self) -> None:
        if self.dev:
            super()._spawn()
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        cmd = [
            self.binary, "agent", "-server", "-bootstrap-expect", "1", "-node", self.node,
            "-bind", "127.0.0.1", "-client", "127.0.0.1", "-data-dir", str(self.workdir / "data"),
            "-config-file", str(config),
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def _ready(self) -> bool:
        if self.scheme == "https" or self.headers:
            return self._ready_custom()
        return super()._ready()

    def _ready_custom(self) -> bool:
        kwargs: dict[str, Any] = {"timeout": 1.0, "headers": self.headers}
        if self.scheme == "https":
            kwargs["verify"] = self.extra.get("ca_file", False)
            kwargs["cert"] = getattr(self, "client_cert", None)
        try:
            leader = requests.get(f"{self.http_addr}/v1/status/leader", **kwargs)
            node = requests.get(f"{self.http_addr}/v1/catalog/node/{self.node}", **kwargs)
            return bool(leader.ok and leader.json() and node.ok and node.json())
        except (requests.RequestException, ValueError):
            return False

    def kill(self) -> None:
        """SIGKILL by PID (no graceful leave)."""
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait(10)

    def restart(self, wipe: bool = False) -> None:
        """SIGKILL, then start on the same ports; ``wipe`` also deletes the data directory
        (a dev agent keeps its local service definitions there otherwise)."""
        self.kill()
        if wipe:
            shutil.rmtree(self.workdir / "data", ignore_errors=True)
        self.start(attempts=1)


class FaultProxy:
    """A TCP proxy in front of ``upstream``: ``pass``, ``silent`` (accept, never answer) or
    ``slow`` (every chunk from upstream delayed by ``delay`` seconds)."""

    def __init__(self, upstream: tuple[str, int] | None, mode: str = "pass", delay: float = 0.0):
        self.upstream = upstream
        self.mode = mode
        self.delay = delay
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._dead: set[socket.socket] = set()  # piped clients whose bytes are now dropped
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sever(self) -> None:
        """Close every open connection (clients reconnect and meet the current mode)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def set_mode(self, mode: str, delay: float = 0.0) -> None:
        self.mode, self.delay = mode, delay
        self.sever()

    def blackhole(self) -> None:
        """A partition: every open connection stays open and carries nothing more, ever (its
        bytes dropped both ways, as by a lost NAT entry); new ones are accepted, never
        answered. Nothing is severed: the clients see no error, only silence."""
        with self._lock:
            self.mode = "silent"
            self._dead.update(self._conns)

    def heal(self) -> None:
        """New connections are piped again; the blackholed ones stay dead (not severed)."""
        self.mode = "pass"

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self.sever()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            with self._lock:
                self._conns.append(client)
            if self.mode == "silent" or self.upstream is None:
                continue  # accepted, kept open, never read nor answered
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)  # type: ignore[arg-type]
        except OSError:
            client.close()
            return
        with self._lock:
            self._conns.append(upstream)
        pair = {client: upstream, upstream: client}
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select(list(pair), [], [], 0.5)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if client in self._dead:
                        continue  # blackholed: read and dropped
                    if sock is upstream and self.mode == "slow":
                        time.sleep(self.delay)
                    pair[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.close()


@contextlib.contextmanager
def gateway_on(
    tmp_path: Path,
    agent: Any,
    pki: DevPKI,
    extra: str = "",
    consul: str = "",
    start: bool = True,
    consul_address: str | None = None,
) -> Iterator[Gateway]:
    """A gateway (daemon + HAProxy) on ``agent``; ``extra`` TOML is appended to its settings,
    ``consul`` lines go into its ``[consul]`` table."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    gw = Gateway(tmp_path, agent, pki, prefix=unique_prefix())
    text = gw.config_text().replace("[consul]\n", "[consul]\n" + consul, 1) + extra
    if consul_address is not None:
        text = text.replace(agent.http_addr, consul_address, 1)
    gw.write_config(text)
    try:
        if start:
            gw.start()
        yield gw
    finally:
        try:
            print(f"\n--- sidecar log tail ({gw.log_path}) ---\n{gw.log_tail(40)}")
        finally:
            if not agent.alive() or not _answers(agent):
                gw.registered.clear()  # nothing to deregister from a dead or wiped agent
            leaks = gw.teardown()
            assert not leaks, leaks


def _answers(agent: Any) -> bool:
    try:
        return requests.get(f"{agent.http_addr}/v1/status/leader", timeout=1,
                            verify=False).ok  # fmt: skip
    except requests.RequestException:
        return False


def failed_calls(gw: Gateway, port: int, seconds: float, expect: set[str]) -> tuple[int, int]:
    """Sequential calls for ``seconds``: (calls made, calls failed or answered by others)."""
    made = failed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = gw.try_call(port, timeout=2.0)
        made += 1
        if not answer or answer.get("instance") not in expect:
            failed += 1
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
    print(f"[calls] {test}: {failed}/{made} failed over {seconds:g}s")  # figures for the report
    return made, failed

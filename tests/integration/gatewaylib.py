"""The gateway under test: settings file, ``sidecar run`` daemon, its HAProxy, Consul
registrations and DIRAC-like client calls (used by ``conftest.py`` and the tests)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
from helpers import free_port, wait_until

from devkit import consul_agent as consul
from devkit.backend import BackendServer
from devkit.backendproc import BackendProcess
from devkit.client import CallError, call
from devkit.consul_agent import ConsulAgent
from devkit.pki import DevPKI
from devkit.procs import stop_process
from sidecar import data
from sidecar.config.loader import load_settings
from sidecar.config.schema import Settings
from sidecar.core.answers import ProcInfo
from sidecar.haproxy.process import HAProxy
from sidecar.health.status import read_status

# DIRAC services the tests may register; each gets a free public port in [ports.overrides].
SERVICES = ("Framework/GwAlpha", "Framework/GwBeta", "DataManagement/GwGamma")
STOP_TIMEOUT = 10.0
EMPTY_PORT_MAP = "system,service,protocol,gateway_port,default_port,project\n"
ROUTE_TIMEOUT = 20.0
_unique = itertools.count(1)


def sidecar_command() -> list[str]:
    script = Path(sys.executable).with_name("sidecar")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from sidecar.cli import main; main()"]


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Gateway:
    """One gateway under test: settings file, daemon process, HAProxy, Consul registrations."""

    def __init__(self, tmp_path: Path, agent: ConsulAgent, pki: DevPKI, prefix: str) -> None:
        self.tmp = tmp_path
        self.agent = agent
        self.pki = pki
        self.prefix = prefix  # unique per test: Consul service names and IDs start with it
        self.names = pki.gateway_names
        self.server_name = self.names[0]
        self.config_path = tmp_path / "sidecar.toml"
        self.template_path = tmp_path / "haproxy.cfg.j2"
        self.log_path = tmp_path / "sidecar.log"
        self.runtime_dir = tmp_path / "run"
        assert len(str(self.runtime_dir / "master.sock")) < 100, "UNIX socket path too long"
        self.ports = {path: free_port() for path in SERVICES}
        self.registered: dict[str, str] = {}  # service ID -> Consul service name
        self.proc: subprocess.Popen[bytes] | None = None
        self.command = sidecar_command()  # e.g. the ``sidecar`` of a venv with only the wheel
        self.config_first = True  # ``sidecar --config X run`` (else ``sidecar run --config X``)
        self.public_ranges: list[str] = []  # [ports] public_ranges (empty: the default)
        # Tests run several gateways side by side on 127.0.0.1: the shipped map would make
        # each bind DIRAC's 69 ports. Its own map holds nothing ([ports.overrides] declare the
        # test services); set ``port_map`` to the shipped one where a test needs it.
        self.port_map = tmp_path / "port-map.csv"
        self.port_map.write_text(EMPTY_PORT_MAP)
        shutil.copyfile(data.path(data.TEMPLATE), self.template_path)
        self.write_config()

    # -- settings --------------------------------------------------------------------------

    def config_text(self) -> str:
        overrides = "\n".join(f'"{path}" = {port}' for path, port in sorted(self.ports.items()))
        names = ", ".join(_toml_str(n) for n in self.names)
        return (
            f"[consul]\naddress = {_toml_str(self.agent.http_addr)}\n\n"
            f'[gateway]\nnames = [{names}]\nbind = "127.0.0.1"\n'
            'backend_networks = ["127.0.0.0/8", "::1/128"]  # the test backends\n\n'
            f"[haproxy]\nruntime_dir = {_toml_str(str(self.runtime_dir))}\n"
            f'template = {_toml_str(str(self.template_path))}\nhard_stop_after = "30s"\n\n'
            f"[ports]\npublic_ranges = {json.dumps(self.public_ranges)}\n"
            f"map_file = {_toml_str(str(self.port_map))}\n\n"
            f"[ports.overrides]\n{overrides}\n\n"
            f'[log]\nlevel = "DEBUG"\n\n'
            f"[certs]\nca_dir = {_toml_str(str(self.pki.ca_dir))}\n\n"
            f'[status]\nlisten = "127.0.0.1:0"\n'
        )

    def write_config(self, text: str | None = None) -> None:
        self.config_path.write_text(self.config_text() if text is None else text)

    @property
    def settings(self) -> Settings:
        return load_settings(str(self.config_path), env={})

    @property
    def haproxy(self) -> HAProxy:
        return HAProxy(self.settings)

    @property
    def haproxy_cfg(self) -> Path:
        return self.runtime_dir / "haproxy.cfg"

    # -- the daemon ------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Gateway:
        """Start ``sidecar run`` and wait until its HAProxy master answers."""
        assert self.proc is None or self.proc.poll() is not None, "daemon already running"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CONSUL_") and k != "SIDECAR_CONFIG"
        }
        config = ["--config", str(self.config_path)]
        cmd = (
            [*self.command, *config, "run"]
            if self.config_first
            else [*self.command, "run", *config]
        )
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.tmp,
            )
        wait_until(
            lambda: self.proc is not None and (self.proc.poll() is not None or self.ready()),
            timeout,
            0.05,
            "the daemon to start HAProxy",
        )
        assert self.proc.poll() is None, f"sidecar exited: {self.log_tail()}"
        return self

    def ready(self) -> bool:
        """The running daemon has written a status saying it applied a config."""
        status = read_status(self.runtime_dir)
        return bool(
            status
            and self.proc is not None
            and status.get("pid") == self.proc.pid
            and status.get("ready")
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sighup(self) -> None:
        assert self.alive()
        os.kill(self.pid, signal.SIGHUP)

    def kill(self) -> None:
        """SIGKILL the daemon (HAProxy must keep serving)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)

    def stop_daemon(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM by PID, SIGKILL after ``timeout``; returns the exit code."""
        return stop_process(self.proc, timeout)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_log(self, text: str, timeout: float = ROUTE_TIMEOUT) -> None:
        wait_until(lambda: text in self.log_text(), timeout, 0.05, f"{text!r} in the daemon log")

    def status(self) -> dict[str, Any]:
        return read_status(self.runtime_dir) or {}

    # -- HAProxy ---------------------------------------------------------------------------

    def proc_info(self) -> ProcInfo:
        info = self.haproxy.proc()
        assert info is not None, "no HAProxy master answers"
        return info

    def reload_count(self) -> int:
        """Reloads counted by the HAProxy master (``show proc``)."""
        return self.proc_info().reloads

    def haproxy_processes(self) -> list[psutil.Process]:
        """Every live process whose command line names this gateway's haproxy.cfg."""
        found = []
        marker = str(self.haproxy_cfg)
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if marker in (proc.info["cmdline"] or []) and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    # -- Consul ----------------------------------------------------------------------------

    def consul_name(self, label: str) -> str:
        return f"{self.prefix}-{label}"

    def register(
        self,
        label: str,
        instance: str,
        port: int,
        dirac: str | None = "Framework/GwAlpha",
        meta: dict[str, str] | None = None,
        tags: tuple[str, ...] = ("dirac",),
        check: str | None = "passing",
        address: str = "127.0.0.1",
    ) -> str:
        """Register instance ``instance`` of Consul service ``<prefix>-<label>``; returns its ID.

        ``dirac`` ("System/Service") fills dirac_system/dirac_service; ``meta`` adds or
        overrides keys.
        """
        full: dict[str, str] = {}
        if dirac is not None:
            system, service = dirac.split("/")
            full = {"dirac_system": system, "dirac_service": service}
        full.update(meta or {})
        service_id = f"{self.prefix}-{instance}"
        name = self.consul_name(label)
        consul.register(
            self.agent.http_addr, name, service_id, address, port, full, tags=tags, check=check
        )
        self.registered[service_id] = name
        return service_id

    def register_backend(
        self,
        label: str,
        backend: BackendServer | BackendProcess,
        instance: str,
        dirac: str = "Framework/GwAlpha",
        **kwargs: Any,
    ) -> str:
        return self.register(label, instance, backend.port, dirac, **kwargs)

    def deregister(self, service_id: str) -> None:
        consul.deregister(self.agent.http_addr, service_id)

    def set_health(self, service_id: str, status: str) -> None:
        consul.set_ttl(self.agent.http_addr, consul.check_id_for(service_id), status)

    def maintenance(self, service_id: str, enable: bool) -> None:
        consul.maintenance(self.agent.http_addr, service_id, enable, reason="test")

    def wait_in_catalog(self, label: str, count: int, timeout: float = 10.0) -> None:
        name = self.consul_name(label)
        wait_until(
            lambda: len(consul.health(self.agent.http_addr, name)) == count,
            timeout,
            0.05,
            f"{count} instance(s) of {name} in the catalog",
        )

    def cleanup_consul(self) -> None:
        for service_id in self.registered:
            with contextlib.suppress(Exception):  # best effort: the agent may be gone
                consul.deregister(self.agent.http_addr, service_id)
        for name in set(self.registered.values()):
            wait_until(
                lambda n=name: consul.health(self.agent.http_addr, n) == [],
                10,
                0.05,
                f"{name} to leave the catalog",
            )

    # -- clients ---------------------------------------------------------------------------

    def call(self, port: int, timeout: float = 5.0) -> dict[str, Any]:
        """One DIRAC-like TLS call through the gateway port (SNI = first gateway name)."""
        return call(
            "127.0.0.1",
            port,
            self.pki.proxy,
            self.pki.ca_dir,
            server_hostname=self.server_name,
            timeout=timeout,
        )

    def try_call(self, port: int, timeout: float = 5.0) -> dict[str, Any] | None:
        try:
            return self.call(port, timeout)
        except CallError:
            return None

    def wait_routed(
        self, port: int, expect_instance: str, timeout: float = ROUTE_TIMEOUT
    ) -> dict[str, Any]:
        """Poll calls through ``port`` until one is answered by ``expect_instance``."""

        def answered() -> dict[str, Any] | None:
            answer = self.try_call(port, timeout=2.0)
            return answer if answer and answer.get("instance") == expect_instance else None

        return wait_until(answered, timeout, 0.1, f"port {port} routed to {expect_instance}")

    def seen(self, port: int, calls: int) -> Counter[str]:
        """Instances that answered ``calls`` sequential calls (failures count as "ERROR")."""
        counts: Counter[str] = Counter()
        for _ in range(calls):
            answer = self.try_call(port, timeout=2.0)
            counts[str(answer["instance"]) if answer else "ERROR"] += 1
        return counts

    def wait_only(
        self, port: int, instances: set[str], streak: int = 6, timeout: float = ROUTE_TIMEOUT
    ) -> None:
        """Poll until ``streak`` calls in a row are all answered by ``instances``."""
        wait_until(
            lambda: set(self.seen(port, streak)) <= instances,
            timeout,
            0.1,
            f"port {port} served only by {sorted(instances)}",
        )

    # -- teardown --------------------------------------------------------------------------

    def teardown(self) -> list[str]:
        """Stop everything by PID; returns what could not be stopped cleanly."""
        problems: list[str] = []
        try:
            self.stop_daemon()
        finally:
            try:
                HAProxy(self.settings).stop(timeout=STOP_TIMEOUT)
            finally:
                for proc in self.haproxy_processes():
                    problems.append(f"haproxy {proc.pid} survived stop(); killed")
                    proc.kill()
                self.cleanup_consul()
        return problems


def unique_prefix() -> str:
    """A prefix for Consul service names and IDs that no other test (or run) uses."""
    return f"gw{next(_unique)}x{os.getpid()}"


def undeclared(name: str = "GwUndeclared") -> tuple[str, int]:
    """A DIRAC service nobody declared (not in the port map, not in [ports.overrides]): its
    port is hashed into the auto range and its arrival needs a reload."""
    from sidecar.core.portmap import hashed_port

    return f"Undeclared/{name}", hashed_port("Undeclared", name, 20000, 29999)


def settled(path: Path, quiet: float = 0.1, timeout: float = 10.0) -> str:
    """The config file once the daemon has written the runtime changes made before this call.

    The daemon writes the file of runtime changes within ``core.schedule.FLUSH_DELAY`` (200 ms)
    of the change, once per batch: wait past that deadline, then until the file is quiet.
    """
    import time

    from sidecar.core.schedule import FLUSH_DELAY

    start = time.monotonic()
    deadline = start + timeout
    while True:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            age = -1.0
        late = time.monotonic() - start >= FLUSH_DELAY + 0.1
        if (late and age >= quiet) or time.monotonic() > deadline:
            return path.read_text()
        time.sleep(0.02)

"""Shared helpers for the benchmarks in ``bench/`` (real Consul, HAProxy and TLS backends on
127.0.0.1; nothing leaves the loopback interface).

- :func:`workdir`: a short directory under /tmp (UNIX socket paths must stay < 108 bytes).
- :func:`probe_ports`: a contiguous run of free TCP ports below the ephemeral range, for the
  public ports of the services (``[ports.overrides]`` or ``dirac_port``).
- :class:`Consul`: a dev agent plus a ``requests.Session`` for fast registrations.
- :class:`Sidecar`: writes the TOML settings, starts ``sidecar run --stop-haproxy`` as a child
  process and stops it (and its HAProxy) by PID.
- :class:`Backends`: a pool of sample TLS backends (child processes, one JSON line per call).
- :func:`tls_call` / :func:`classify`: a DIRAC-like TLS call through the gateway with the RFC
  3820 proxy as client certificate, failures sorted by kind.
- :func:`print_table`, :func:`percentile`, :func:`machine_line`: reporting.

Every helper that starts a process registers its stop with the caller's ``ExitStack`` so that
``finally`` stops everything by PID, in reverse order.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import requests
from tls_backend import probe_name as probe_name  # re-exported: the measuring polls' names

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devkit.client import client_context  # noqa: E402
from devkit.consul_agent import ConsulAgent, find_consul  # noqa: E402
from devkit.pki import DevPKI, make_dev_pki  # noqa: E402
from sidecar.config.loader import load_settings  # noqa: E402
from sidecar.config.schema import Settings  # noqa: E402
from sidecar.haproxy.process import HAProxy  # noqa: E402
from sidecar.health.status import read_status  # noqa: E402

GATEWAY_NAMES = ("dirac-gw.bench", "localhost")
SERVER_NAME = GATEWAY_NAMES[0]
TAG = "dirac"


class HarnessError(RuntimeError):
    """The benchmark harness itself failed (not a measured figure)."""


# --- small utilities ---------------------------------------------------------------------


def workdir(prefix: str = "bench-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def wait_for(
    pred: Callable[[], Any], timeout: float, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll ``pred`` until truthy; raise HarnessError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout:g}s waiting for {what or pred}")
        time.sleep(interval)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def probe_ports(
    count: int, low: int = 10000, high: int = 32000, seed: int | None = None
) -> list[int]:
    """``count`` contiguous free ports in [low, high) (below Linux's ephemeral range, so that
    client connections never take them). Starts at a random offset to avoid parallel runs."""
    rng = random.Random(seed)
    for _ in range(50):
        start = rng.randrange(low, high - count)
        ports = list(range(start, start + count))
        if all(_port_free(p) for p in ports):
            return ports
    raise HarnessError(f"no run of {count} free ports in {low}-{high}")


def _free_ephemeral_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 100 values is the 99th smallest)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-pct * len(ordered) // 100))))
    return ordered[rank - 1]


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    rows = [[str(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    print(f"\n## {title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    sys.stdout.flush()


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_line() -> str:
    return f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}  nproc={os.cpu_count()}  loadavg={loadavg()}"


def make_pki(directory: Path, hosts: Sequence[str] = ("backend1",)) -> DevPKI:
    return make_dev_pki(directory, GATEWAY_NAMES, hosts, user="alice", group="dirac_user")


# --- Consul ------------------------------------------------------------------------------


class Consul:
    """A Consul dev agent (stopped by PID) and a session for fast agent API calls."""

    def __init__(self, directory: Path) -> None:
        self.agent = ConsulAgent(workdir=directory, binary=find_consul())
        self.session = requests.Session()

    def start(self, stack: contextlib.ExitStack) -> Consul:
        stack.callback(self.agent.stop, 10.0, True)
        self.agent.start()
        stack.callback(self.session.close)
        return self

    @property
    def addr(self) -> str:
        return self.agent.http_addr

    def _put(self, path: str, body: Any = None, params: Mapping[str, str] | None = None) -> None:
        resp = self.session.put(f"{self.addr}{path}", json=body, params=params, timeout=10)
        if resp.status_code != 200:
            raise HarnessError(f"PUT {path}: HTTP {resp.status_code} {resp.text[:200]}")

    def register(
        self,
        name: str,
        sid: str,
        port: int,
        system: str,
        service: str,
        status: str = "passing",
        address: str = "127.0.0.1",
        meta: Mapping[str, str] | None = None,
    ) -> None:
        """Register instance ``sid`` of Consul service ``name`` with a TTL check."""
        body = {
            "Name": name,
            "ID": sid,
            "Address": address,
            "Port": port,
            "Tags": [TAG],
            "Meta": {"dirac_system": system, "dirac_service": service, **(meta or {})},
            "Check": {
                "CheckID": f"service:{sid}",
                "Name": f"{name} TTL",
                "TTL": "1h",
                "Status": status,
            },
        }
        self._put("/v1/agent/service/register", body)

    def deregister(self, sid: str) -> None:
        self._put(f"/v1/agent/service/deregister/{sid}")

    def maintenance(self, sid: str, enable: bool) -> None:
        self._put(
            f"/v1/agent/service/maintenance/{sid}",
            params={"enable": "true" if enable else "false", "reason": "bench"},
        )

    def set_ttl(self, sid: str, status: str) -> None:
        endpoint = {"passing": "pass", "warning": "warn", "critical": "fail"}[status]
        self._put(f"/v1/agent/check/{endpoint}/service:{sid}")

    def health(self, name: str) -> list[dict[str, Any]]:
        resp = self.session.get(f"{self.addr}/v1/health/service/{name}", timeout=10)
        resp.raise_for_status()
        result: list[dict[str, Any]] = resp.json()
        return result

    def services(self) -> dict[str, list[str]]:
        resp = self.session.get(f"{self.addr}/v1/catalog/services", timeout=10)
        resp.raise_for_status()
        result: dict[str, list[str]] = resp.json()
        return result

    def version(self) -> str:
        out = subprocess.run(
            [self.agent.binary, "version"], capture_output=True, text=True, check=False, timeout=10
        )
        return out.stdout.splitlines()[0] if out.stdout else "?"


# --- TLS backends ------------------------------------------------------------------------


class BackendChild:
    """``bench/tls_backend.py`` as a child process: started, waited for, stopped by PID."""

    def __init__(self, args: Sequence[str], log: Path) -> None:
        self.args = list(args)
        self.log = log
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> BackendChild:
        cmd = [sys.executable, str(Path(__file__).with_name("tls_backend.py")), *self.args]
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline().decode().strip()
                if line.startswith("READY "):
                    self.port = int(line.split()[1])
                    return self
        self.stop()
        raise HarnessError(f"backend did not start: {' '.join(cmd)}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 5.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()


@dataclass
class Backend:
    proc: BackendChild
    instance: str

    @property
    def port(self) -> int:
        return self.proc.port


class Backends:
    """Sample TLS backends as child processes (escape the harness's GIL)."""

    def __init__(self, pki: DevPKI, directory: Path) -> None:
        self.pki = pki
        self.directory = directory
        self.items: list[Backend] = []

    def start(self, stack: contextlib.ExitStack, count: int, prefix: str = "be") -> list[Backend]:
        host = self.pki.hosts[0]
        started = []
        for i in range(count):
            instance = f"{prefix}{i}"
            args = [
                "--listen",
                "127.0.0.1:0",
                "--cert",
                str(self.pki.host_cert(host)),
                "--key",
                str(self.pki.host_key(host)),
                "--ca-dir",
                str(self.pki.ca_dir),
                "--instance",
                instance,
            ]
            proc = BackendChild(args, self.directory / f"backend-{instance}.log")
            stack.callback(proc.stop, 5.0)
            proc.start()
            backend = Backend(proc, instance)
            self.items.append(backend)
            started.append(backend)
        return started


class Sink:
    """Many listening TCP ports on 127.0.0.1 that accept and close at once, served by one
    thread: stand-ins for instances that only need to pass HAProxy's TCP health checks."""

    def __init__(self, ports: Sequence[int]) -> None:
        import selectors
        import threading

        self.ports = list(ports)
        self._sel = selectors.DefaultSelector()
        self._socks: list[socket.socket] = []
        for port in self.ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(64)
            sock.setblocking(False)
            self._sel.register(sock, selectors.EVENT_READ)
            self._socks.append(sock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.accepted = 0

    def start(self, stack: contextlib.ExitStack) -> Sink:
        stack.callback(self.stop)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=0.2):
                try:
                    conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    conn.close()
                    self.accepted += 1
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self._socks:
            sock.close()
        self._sel.close()


# --- TLS client --------------------------------------------------------------------------


def probe_ctx(pki: DevPKI) -> ssl.SSLContext:
    """``client_ctx`` for names of ``probe_name``: the chain is verified, the host name not
    (the backend's certificate names the gateway, not the probe name)."""
    ctx = client_context(pki.proxy, pki.ca_dir)
    ctx.check_hostname = False
    return ctx


def client_ctx(pki: DevPKI) -> ssl.SSLContext:
    """The client context of ``devkit.client``: the proxy chain as client certificate,
    the dev CA, hostname check on. Built once and reused (building it per call costs ms)."""
    return client_context(pki.proxy, pki.ca_dir)


FAILURE_KINDS = ("refused", "reset", "timeout", "tls", "closed", "other")


def classify(exc: BaseException) -> str:
    """One of FAILURE_KINDS, the same split as ``devkit.client``."""
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return "closed"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset"
    return "other"


def tls_call(
    ctx: ssl.SSLContext,
    port: int,
    timeout: float = 5.0,
    host: str = "127.0.0.1",
    quickack: bool = True,
    server_name: str = SERVER_NAME,
) -> tuple[str, dict[str, Any] | None, str]:
    """One fresh TCP connection + full TLS handshake + the backend's JSON line.

    Returns ("ok", answer, "") or (kind, None, message).
    """
    stage = "connect"
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            stage = "handshake"
            with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                stage = "read"
                if quickack:
                    # The sample backend writes its session tickets and its answer separately
                    # without TCP_NODELAY: Nagle then waits for our delayed ACK (~40 ms). ACK
                    # at once so that the figures measure the gateway, not that artefact.
                    tls.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                data = b""
                while b"\n" not in data and len(data) < 65536:
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    data += chunk
    except OSError as exc:
        return classify(exc), None, f"{stage}: {type(exc).__name__}: {exc}"
    if not data:
        return "closed", None, "read: closed without an answer"
    try:
        answer = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        return "other", None, f"not JSON: {data[:80]!r}"
    return "ok", answer, ""


# --- the sidecar -------------------------------------------------------------------------


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(value)


class Sidecar:
    """``sidecar run --stop-haproxy`` with a generated settings file, stopped by PID."""

    def __init__(
        self,
        directory: Path,
        consul_addr: str,
        *,
        overrides: Mapping[str, int] | None = None,
        sections: Mapping[str, Mapping[str, Any]] | None = None,
        venv: Path | None = None,
    ) -> None:
        self.directory = directory
        self.venv = venv  # run ``sidecar`` from this venv (installed_venv), outside the checkout
        directory.mkdir(parents=True, exist_ok=True)
        self.runtime_dir = directory / "run"
        # The settings file sits in its own directory: the daemon watches that directory, and
        # a log file next to it would feed its own watcher.
        (directory / "etc").mkdir(exist_ok=True)
        self.config_path = directory / "etc" / "sidecar.toml"
        self.log_path = directory / "sidecar.log"
        assert len(str(self.runtime_dir / "master.sock")) < 100, "runtime_dir too long"
        data: dict[str, dict[str, Any]] = {
            "consul": {"address": consul_addr},
            "gateway": {
                "names": list(GATEWAY_NAMES),
                "bind": "127.0.0.1",
                "backend_networks": ["127.0.0.0/8"],  # the bench's backends
            },
            "haproxy": {"runtime_dir": str(self.runtime_dir), "hard_stop_after": "30s"},
            "apply": {},
            "status": {"listen": f"127.0.0.1:{_free_ephemeral_port()}"},
            "log": {"level": "INFO"},
        }
        for section, values in (sections or {}).items():
            data.setdefault(section, {}).update(values)
        lines: list[str] = []
        for section, values in data.items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
            lines.append("")
        lines.append("[ports.overrides]")
        lines += [f"{json.dumps(k)} = {v}" for k, v in sorted((overrides or {}).items())]
        self.config_path.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def settings(self) -> Settings:
        return load_settings(str(self.config_path), env={})

    @property
    def haproxy(self) -> HAProxy:
        return HAProxy(self.settings)

    def start(self, stack: contextlib.ExitStack, timeout: float = 120.0) -> Sidecar:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CONSUL_") and k != "SIDECAR_CONFIG"
        }
        if self.venv is None:
            entry = [sys.executable, "-c", "from sidecar.cli import main; main()"]
        else:
            entry = [str(self.venv / "bin" / "sidecar")]
        cmd = [*entry, "--config", str(self.config_path), "run", "--stop-haproxy"]
        stack.callback(self.stop)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=ROOT if self.venv is None else self.directory,
            )
        wait_for(
            lambda: self.proc is not None and (self.proc.poll() is not None or self.ready()),
            timeout,
            0.05,
            "the sidecar to apply its first config",
        )
        if self.proc.poll() is not None:
            raise HarnessError(f"sidecar exited {self.proc.returncode}: {self.log_tail()}")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def ready(self) -> bool:
        st = self.status()
        return bool(
            st and self.proc is not None and st.get("pid") == self.proc.pid and st.get("ready")
        )

    def status(self) -> dict[str, Any]:
        return read_status(self.runtime_dir) or {}

    def wait_idle(
        self, threshold: float = 5.0, window: float = 1.0, timeout: float = 90.0
    ) -> float:
        """Wait until the daemon used < ``threshold`` % of a core over ``window`` seconds
        (start-up work such as the first certificate probe of every backend is over)."""
        proc = psutil.Process(self.pid)
        deadline = time.monotonic() + timeout
        while True:
            pct = proc.cpu_percent(interval=window)
            if pct < threshold or time.monotonic() > deadline:
                return pct

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_count(self, text: str) -> int:
        try:
            return self.log_path.read_text(errors="replace").count(text)
        except OSError:
            return 0

    def haproxy_processes(self) -> list[psutil.Process]:
        marker = str(self.runtime_dir / "haproxy.cfg")
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if marker in (proc.info["cmdline"] or []) and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the daemon (it stops HAProxy), SIGKILL after a bound; then make sure no
        HAProxy of this runtime directory survives (stopped by PID)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        with contextlib.suppress(Exception):
            self.haproxy.stop(timeout=10.0)
        for leftover in self.haproxy_processes():
            with contextlib.suppress(psutil.Error):
                leftover.kill()


def haproxy_version() -> str:
    out = subprocess.run(["haproxy", "-v"], capture_output=True, text=True, check=False, timeout=10)
    return out.stdout.splitlines()[0] if out.stdout else "?"

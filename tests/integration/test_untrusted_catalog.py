"""Issue 11, "the catalog is untrusted input": each attack replayed on real processes.

Every test drives a real ``sidecar run`` (the ``gateway`` / ``gateway_unstarted`` fixtures) and
its real HAProxy against the module's real Consul dev agent, registers what an attacker able to
write to the catalog would register, and asserts the safe outcome:

1. no open relay: loopback and link-local (cloud metadata) backends are refused under the
   default policy, and nothing ever connects to them (real listeners there count every SYN);
   the Consul agent's and the status endpoint's own address:port, link-local and unspecified
   addresses are refused even where the operator allows loopback; host names are resolved by
   the sidecar, HAProxy only sees IPs;
2. an unbindable registration harms only itself: EACCES (no CAP_NET_BIND_SERVICE, learnt from
   HAProxy's alert after a failed reload), EADDRINUSE (a squatter appearing while the frontend
   is being added, changes still arriving), EADDRNOTAVAIL (a [gateway] bind that is not local);
3. public ports are not taken over (a hashed port in use, a port-map port whose owner is absent);
4. discovered gateway names need a passing check of their own and an allowed suffix;
5. the configured Consul token wins over ``CONSUL_HTTP_TOKEN`` and leaks nowhere;
6. catalog text (node names, service IDs) cannot forge log lines or reach a terminal raw;
7. bounds: ``[limits] max_instances`` and ``max_problems``.

A gap found on the way (the status endpoint on an ephemeral port, ``[status] listen =
"127.0.0.1:0"``, was not recognised as the gateway's own endpoint) is fixed; its test stays.

Network traffic stays on 127.0.0.0/8. Every wait is bounded and polled; the only fixed-length
waits are observation windows that prove an ABSENCE (no connection ever arrives), each sized
from HAProxy's check interval. Every process, socket and registration is stopped or removed by
a finalizer.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest
from gatewaylib import Gateway, settled, sidecar_command
from helpers import at_rest, free_port, wait_until

from devkit import consul_agent as consul
from devkit.consul_agent import ConsulAgent
from sidecar.config.loader import load_settings
from sidecar.core.portmap import hashed_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ALPHA, BETA, GAMMA = "Framework/GwAlpha", "Framework/GwBeta", "DataManagement/GwGamma"
FAST = "\n[apply]\nmin_reload_interval = 0.1\nconfirm_delay = 1.0\n"
CHECK_WINDOW = 4.5  # seconds: HAProxy checks every 2 s (fastinter 0.5 s): >= 2 rounds
SETPRIV = shutil.which("setpriv")
CAP_NET_BIND_SERVICE = 10
FORGED = "\n2026-01-01 ERROR forged line"
CLEAR_SCREEN = "\x1b[2J"
CS_DATA = Path(__file__).resolve().parents[1] / "data" / "cs" / "dirac-v9.cfg"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an env proxy


# --- small helpers --------------------------------------------------------------------------


def put_json(url: str, body: Any, timeout: float = 5.0) -> bytes:
    """PUT ``body`` as JSON to ``url`` (a Consul HTTP API endpoint on loopback)."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="PUT")
    with _DIRECT.open(request, timeout=timeout) as reply:
        data: bytes = reply.read()
        return data


def edit(text: str, old: str, new: str) -> str:
    """``text`` with ``old`` replaced once; fails loudly when the fixture's text changed."""
    assert old in text, f"{old!r} not in the settings text"
    return text.replace(old, new, 1)


def without_backend_networks(text: str) -> str:
    """The fixture's settings without ``[gateway] backend_networks``: the default policy."""
    stripped = re.sub(r"(?m)^backend_networks = .*\n", "", text)
    assert stripped != text and "backend_networks" not in stripped
    return stripped


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port_in(low: int, high: int, avoid: set[int]) -> int:
    """A currently free port in [low, high] not in ``avoid`` (which it joins)."""
    for port in range(low + (os.getpid() * 7) % (high - low), high + 1):
        if port not in avoid and port_is_free(port):
            avoid.add(port)
            return port
    pytest.skip(f"no free port in {low}-{high}")


def hashed_service(system: str, stem: str, low: int, high: int, avoid: set[int]) -> tuple[str, int]:
    """A "System/Service" in no map or override whose hashed public port is free right now."""
    for n in range(200):
        service = stem if n == 0 else f"{stem}{n}"
        port = hashed_port(system, service, low, high)
        if port not in avoid and port_is_free(port):
            avoid.add(port)
            return f"{system}/{service}", port
    pytest.skip(f"no {system}/{stem}N with a free hashed port")


def problems_of(gw: Gateway) -> list[str]:
    return list(gw.status().get("problems", []))


def wait_problem(gw: Gateway, *needles: str, timeout: float = 20.0) -> str:
    """The first status problem containing every needle (polled)."""

    def found() -> str:
        return next((p for p in problems_of(gw) if all(n in p for n in needles)), "")

    return wait_until(found, timeout, 0.1, f"a problem with {needles} in the status")


def instance_needle(gw: Gateway, service_id: str) -> str:
    """How a status problem names the instance ``service_id`` of the dev agent's node."""
    return f"instance '{gw.agent.node}/{service_id}'"


def server_addresses(config: str) -> list[str]:
    """The host part of every ``server`` line of a rendered HAProxy config."""
    hosts = []
    for match in re.finditer(r"(?m)^\s+server \S+ (\S+) ", config):
        host = match.group(1).rsplit(":", 1)[0]
        hosts.append(host[1:-1] if host.startswith("[") else host)
    return hosts


def server_endpoints(config: str) -> list[str]:
    """``address:port`` of every ``server`` line of a rendered HAProxy config."""
    return re.findall(r"(?m)^\s+server \S+ (\S+) ", config)


def listens_on(config: str, port: int) -> bool:
    """Whether a rendered config binds a frontend on ``port`` (whatever the template calls it)."""
    return re.search(rf"(?m)^\s*bind \S+:{port}\s*$", config) is not None


def http_answer(port: int, host: str = "127.0.0.1", path: str = "/v1/agent/self") -> bytes:
    """What a plain HTTP request to ``host:port`` gets back (b"" when refused or reset)."""
    data = b""
    try:
        with socket.create_connection((host, port), timeout=2.0) as sock:
            sock.settimeout(2.0)
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            while len(data) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except (ConnectionRefusedError, ConnectionResetError, TimeoutError, BrokenPipeError):
        pass
    return data


def run_cli(gw: Gateway, *args: str, env: dict[str, str] | None = None) -> tuple[int, bytes]:
    """``sidecar --config <gw's settings> ARGS``: (exit code, stdout + stderr as bytes)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    done = subprocess.run(
        [*sidecar_command(), "--config", str(gw.config_path), *args],
        capture_output=True,
        timeout=60,
        env={**base, **(env or {})},
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def start_with_env(gw: Gateway, extra_env: dict[str, str], timeout: float = 30.0) -> Gateway:
    """Like ``Gateway.start`` but with ``extra_env`` in the daemon's environment (which
    ``Gateway.start`` deliberately scrubs of ``CONSUL_*``). The fixture stops ``gw.proc``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("CONSUL_") and k != "SIDECAR_CONFIG"
    }
    env.update(extra_env)
    with gw.log_path.open("ab") as log:
        gw.proc = subprocess.Popen(
            [*gw.command, "--config", str(gw.config_path), "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=gw.tmp,
        )
    wait_until(
        lambda: gw.proc is not None and (gw.proc.poll() is not None or gw.ready()),
        timeout,
        0.05,
        "the daemon to start HAProxy",
    )
    assert gw.alive(), f"sidecar exited: {gw.log_tail()}"
    return gw


# --- test doubles: a counting listener, a squatter, a recording Consul proxy ---------------


class SynCounter:
    """Counts TCP connection attempts (SYN without ACK) per (IPv4 address, port) by reading
    every frame on the loopback interface (AF_PACKET, needs root).

    Counting accepted connections would miss HAProxy's health checks: a plain ``check`` sends
    SYN, gets SYN-ACK and resets before acknowledging it, so the listener's ``accept`` never
    returns for it (measured: a static and a dynamic server, 4-5 SYNs in 8 s, 0 accepts).
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.1)
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="syn-counter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, where = self._sock.recvfrom(128)
            except TimeoutError:
                continue
            except OSError:
                return
            # Loopback shows each packet twice (outgoing, then incoming): count one of them.
            if where[2] == socket.PACKET_OUTGOING or frame[12:14] != b"\x08\x00":
                continue
            ip = frame[14:]
            if len(ip) < 20 or ip[9] != socket.IPPROTO_TCP:
                continue
            tcp = ip[(ip[0] & 0x0F) * 4 :]
            if len(tcp) < 14 or tcp[13] & 0x12 != 0x02:  # SYN set, ACK clear
                continue
            key = (socket.inet_ntoa(ip[16:20]), int.from_bytes(tcp[2:4], "big"))
            with self._lock:
                self._counts[key] = self._counts.get(key, 0) + 1

    def count(self, host: str, port: int) -> int:
        with self._lock:
            return self._counts.get((host, port), 0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


class CountingListener:
    """A real TCP listener at ``host``: counts every connection attempt to it (SYNs, through
    a :class:`SynCounter`), accepts what completes, keeps the first bytes each peer sent (a TLS
    probe opens with a ClientHello ``16 03 ..``) and closes."""

    def __init__(self, syns: SynCounter, host: str = "127.0.0.1") -> None:
        self._syns = syns
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.host, self.port = host, int(self._sock.getsockname()[1])
        self._first: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"count-{self.port}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(0.5)
                try:
                    data = conn.recv(16)
                except OSError:
                    data = b""
            with self._lock:
                self._first.append(data)

    @property
    def attempts(self) -> int:
        """Connection attempts (SYNs) to this listener, completed or not."""
        return self._syns.count(self.host, self.port)

    @property
    def tls_hellos(self) -> int:
        """Accepted connections that opened with a TLS handshake record (certificate probes)."""
        with self._lock:
            return sum(1 for data in self._first if data.startswith(b"\x16\x03"))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@pytest.fixture
def listeners() -> Iterator[Callable[[str], CountingListener]]:
    """``make(host)`` starts a :class:`CountingListener`; all (and the SYN counter) are
    closed at teardown. Skips where loopback frames cannot be read (not root)."""
    try:
        syns = SynCounter()
    except PermissionError:
        pytest.skip("counting SYNs on lo needs CAP_NET_RAW")
    made: list[CountingListener] = []

    def make(host: str = "127.0.0.1") -> CountingListener:
        made.append(CountingListener(syns, host))
        return made[-1]

    try:
        yield make
    finally:
        for listener in made:
            listener.close()
        syns.close()


class RaceSquatter:
    """Binds ``127.0.0.1:port`` the moment the daemon validates a config that adds a
    frontend on that port (``haproxy -c`` runs on ``haproxy.cfg.new``; the preflight bind test
    is already behind it, HAProxy's own bind is still ahead), i.e. while the gateway is adding
    that frontend."""

    def __init__(self, runtime_dir: Path, port: int) -> None:
        self.candidate = runtime_dir / "haproxy.cfg.new"
        self.port = port
        self.sock: socket.socket | None = None
        self.error: OSError | None = None
        self.bound = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="squatter", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                text = self.candidate.read_text()
            except OSError:
                text = ""
            if listens_on(text, self.port):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.bind(("127.0.0.1", self.port))
                    sock.listen(8)
                except OSError as exc:
                    self.error = exc
                    sock.close()
                else:
                    self.sock = sock
                self.bound.set()
                return
            time.sleep(0.0005)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self.sock is not None:
            self.sock.close()


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    token: str | None  # the X-Consul-Token header (None: absent)
    raw: bytes  # request line, headers and body, to search for any leaked secret


class RecordingConsulProxy:
    """A plain HTTP proxy on 127.0.0.1 in front of a Consul agent that records every request
    (method, path, ``X-Consul-Token``) and forwards it unchanged (urllib, no env proxies)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                head = f"{self.requestline}\r\n{self.headers}".encode("utf-8", "replace")
                token = self.headers.get("X-Consul-Token")
                with proxy._lock:
                    proxy.requests.append(Recorded(self.command, self.path, token, head + body))
                request = urllib.request.Request(
                    proxy.upstream + self.path,
                    data=body if self.command != "GET" else None,
                    method=self.command,
                )
                for name in ("X-Consul-Token", "Content-Type"):
                    if self.headers.get(name) is not None:
                        request.add_header(name, self.headers[name])
                try:
                    with _DIRECT.open(request, timeout=60) as reply:
                        status, headers, data = reply.status, reply.headers, reply.read()
                except urllib.error.HTTPError as exc:
                    status, headers, data = exc.code, exc.headers, exc.read()
                except OSError as exc:
                    status, headers, data = 502, None, str(exc).encode()
                self.send_response(status)
                wanted = (
                    "Content-Type",
                    "X-Consul-Index",
                    "X-Consul-KnownLeader",
                    "X-Consul-LastContact",
                )
                for name in wanted:
                    if headers is not None and headers.get(name) is not None:
                        self.send_header(name, headers[name])
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def recorded(self) -> list[Recorded]:
        with self._lock:
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def consul_proxy(consul_agent: ConsulAgent) -> Iterator[RecordingConsulProxy]:
    """Set up before the gateway (so torn down after it: the daemon deregisters through it)."""
    proxy = RecordingConsulProxy(consul_agent.http_addr)
    yield proxy
    proxy.close()


class ConsulWrites:
    """Registrations made around the gateway helpers (agent API with any body, catalog API
    with any node name); every one is removed at teardown."""

    def __init__(self, agent: ConsulAgent) -> None:
        self.agent = agent
        self.services: list[str] = []
        self.nodes: list[str] = []

    def agent_service(self, body: dict[str, Any]) -> None:
        put_json(f"{self.agent.http_addr}/v1/agent/service/register", body)
        self.services.append(str(body["ID"]))

    def catalog(self, body: dict[str, Any]) -> None:
        put_json(f"{self.agent.http_addr}/v1/catalog/register", body)
        if body["Node"] not in self.nodes:
            self.nodes.append(str(body["Node"]))

    def cleanup(self) -> None:
        for service_id in self.services:
            with contextlib.suppress(OSError):
                consul.deregister(self.agent.http_addr, service_id)
        for node in self.nodes:
            with contextlib.suppress(OSError):
                put_json(f"{self.agent.http_addr}/v1/catalog/deregister", {"Node": node})


@pytest.fixture
def consul_writes(consul_agent: ConsulAgent) -> Iterator[ConsulWrites]:
    writes = ConsulWrites(consul_agent)
    try:
        yield writes
    finally:
        writes.cleanup()


# --- 1. no open relay -------------------------------------------------------------------------


def test_default_policy_refuses_loopback_and_link_local_and_never_connects(
    gateway_unstarted: Gateway, listeners: Callable[[str], CountingListener]
) -> None:
    """Attack: with the shipped default policy (no ``[gateway] backend_networks``) register
    backends at 127.0.0.1, 127.0.0.2, ``localhost`` and 169.254.169.254 (cloud metadata), to
    make the internet-facing gateway a relay into the host or its cloud.

    Safe outcome: each is skipped and reported, no ``server`` line names it, and over several
    HAProxy check rounds nothing connects to real listeners at those addresses: neither
    HAProxy's health checks nor the certificate probe (``sidecar certs`` runs during the
    window; the daemon's own probe only ever targets servers of the applied state, which is
    empty here). The control (checks DO connect to an admitted backend) is in
    ``test_explicit_networks_no_relay_names_resolved_ports_not_taken_over``: under the default
    policy no backend reachable from this sandbox (loopback only) may be admitted.
    """
    gw = gateway_unstarted
    gw.write_config(without_backend_networks(gw.config_text()))
    assert gw.settings.gateway.backend_networks == ()  # really the default policy
    one, two = listeners("127.0.0.1"), listeners("127.0.0.2")
    sids = {
        "127.0.0.1": gw.register("alpha", "lo1", one.port, ALPHA, address="127.0.0.1"),
        "127.0.0.2": gw.register("beta", "lo2", two.port, BETA, address="127.0.0.2"),
        "localhost": gw.register("alpha", "byname", one.port, ALPHA, address="localhost"),
        "169.254.169.254": gw.register("gamma", "meta", 80, GAMMA, address="169.254.169.254"),
    }
    gw.start()  # the registrations are there before the first apply
    window_end = time.monotonic() + CHECK_WINDOW  # HAProxy runs its first config from here
    reasons = {
        "127.0.0.1": "backend 127.0.0.1 refused: is a loopback address",
        "127.0.0.2": "backend 127.0.0.2 refused: is a loopback address",
        "localhost": "backend localhost (127.0.0.1) refused: is a loopback address",
        "169.254.169.254": "backend 169.254.169.254 refused: is link-local",
    }
    for address, sid in sids.items():
        wait_problem(gw, instance_needle(gw, sid), reasons[address])
    config = settled(gw.haproxy_cfg)
    assert server_addresses(config) == [], config  # not one server line
    assert "169.254" not in config and "127.0.0.2" not in config
    _, out = run_cli(gw, "certs")  # the certificate probe, on the same fenced catalog
    assert b"127.0.0.1" not in out and b"169.254" not in out, out.decode(errors="replace")
    while time.monotonic() < window_end:  # observation window: an absence cannot be polled
        assert one.attempts == two.attempts == 0
        time.sleep(0.1)
    assert (one.attempts, two.attempts) == (0, 0), "something connected to a refused backend"
    status = gw.status()
    assert status["ready"] and status["last_apply_ok"] and gw.alive()
    assert not status.get("certs", {}).get("servers"), status.get("certs")


def test_explicit_networks_no_relay_names_resolved_ports_not_taken_over(
    gateway_unstarted: Gateway,
    backend_factory: Any,
    listeners: Callable[[str], CountingListener],
    consul_writes: ConsulWrites,
) -> None:
    """Attacks, on one gateway whose ``backend_networks`` allow loopback (the fixture's):

    * Address/Port = the Consul agent's own HTTP endpoint (also by the name ``localhost``), and
      = the status endpoint, each with a ``dirac_port`` inside the public ranges, to reach the
      gateway's own APIs from the internet;
    * 169.254.169.254, outside the allowed networks, and 0.0.0.0 (Consul refuses it as a
      service address, "Invalid service address", but not as a node address, which an
      instance without an address of its own inherits);
    * a backend registered by host name (``localhost``);
    * public port takeovers (:func:`_replay_port_takeovers`, on the same gateway: the checks
      do not interfere, and the daemon's certificate probe needs 10 s anyway).

    Safe outcome: the own endpoints are refused ("endpoint of the gateway's own services") and a
    plain HTTP request to their public ports gets no HTTP answer; the others are refused too;
    the host name is resolved by the sidecar (only IPs in the config) and served. Control for
    the counting listener of the default-policy test: an admitted backend DOES receive HAProxy's
    checks, and the certificate probes (``sidecar certs`` and the daemon's) DO connect to it.
    """
    gw = gateway_unstarted
    # one service of the shipped map, to show that its port is never handed over
    gw.port_map.write_text(
        "system,service,protocol,gateway_port,default_port,project\n"
        "Framework,SystemAdministrator,dips,9162,9162,DIRAC\n"
    )
    status_port = free_port()
    gw.write_config(
        edit(gw.config_text(), 'listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{status_port}"')
    )
    gw.start()
    settings = gw.settings
    low, high = settings.ports.auto_low, settings.ports.auto_high
    taken: set[int] = set(gw.ports.values())
    consul_port = int(gw.agent.http_addr.rsplit(":", 1)[1])
    relays = {  # label -> (address, port, public port): each aims a public port at an own API
        "consul": ("127.0.0.1", consul_port, free_port_in(low, high, taken)),
        "consulname": ("localhost", consul_port, free_port_in(low, high, taken)),
        "status": ("127.0.0.1", status_port, free_port_in(low, high, taken)),
    }
    relay_ids = {
        label: gw.register(
            label,
            f"relay-{label}",
            port,
            f"Xsys/Relay{label.title()}",
            meta={"dirac_port": str(public)},
            address=address,
        )
        for label, (address, port, public) in relays.items()
    }
    outside = {
        "169.254.169.254": gw.register("meta", "imds", 80, "Xsys/Imds", address="169.254.169.254"),
    }
    any_node, any_id = f"{gw.prefix}-anynode", f"{gw.prefix}-any"
    consul_writes.catalog(
        {
            "Node": any_node,
            "Address": "0.0.0.0",
            "Service": {
                "Service": gw.consul_name("any"),
                "ID": any_id,
                "Port": 4444,
                "Tags": ["dirac"],
                "Meta": {"dirac_system": "Xsys", "dirac_service": "Anywhere"},
            },
        }
    )
    counted = listeners("127.0.0.1")
    gw.register("beta", "counted", counted.port, BETA)  # the control: an admitted backend
    named = backend_factory(instance="byname")
    gw.register("gamma", "byname", named.port, GAMMA, address="localhost")

    gw.wait_routed(gw.ports[GAMMA], "byname")  # a host name, resolved by the sidecar
    for sid in relay_ids.values():
        wait_problem(
            gw, instance_needle(gw, sid), "refused: is an endpoint of the gateway's own services"
        )
    wait_problem(
        gw, instance_needle(gw, outside["169.254.169.254"]), "outside [gateway] backend_networks"
    )
    wait_problem(gw, f"instance '{any_node}/{any_id}'", "unspecified address")
    config = settled(gw.haproxy_cfg)
    hosts = server_addresses(config)
    assert hosts and all(ipaddress.ip_address(h) for h in hosts), hosts  # only IPs
    assert "localhost" not in config  # the name never reaches HAProxy: it cannot resolve it
    assert not {"169.254.169.254", "0.0.0.0"} & set(hosts), hosts
    assert f":{consul_port} " not in config and f":{status_port} " not in config
    # The own endpoints answer HTTP directly (so the probe below would see an answer) ...
    assert http_answer(consul_port).startswith(b"HTTP/1.")
    assert http_answer(status_port, path="/metrics").startswith(b"HTTP/1.")
    for _address, _port, public in relays.values():  # ... but never through the gateway
        assert not listens_on(config, public)
        assert b"HTTP/" not in http_answer(public), f"public port {public} relays an own API"

    # Control: HAProxy's checks reach an admitted backend within a few check rounds ...
    wait_until(lambda: counted.attempts >= 2, 2 * CHECK_WINDOW, 0.1, "HAProxy checks")
    assert counted.tls_hellos == 0  # plain TCP checks send nothing

    _replay_port_takeovers(gw, backend_factory, taken)

    # ... and the certificate probes do too: the CLI's at once, the daemon's within its 10 s
    # minimum gap between two runs (its report in the status names the server).
    hellos = counted.tls_hellos
    _, out = run_cli(gw, "certs")
    assert counted.tls_hellos > hellos, out.decode(errors="replace")

    def daemon_probed() -> bool:
        servers = gw.status().get("certs", {}).get("servers") or []
        return any("-counted-" in str(entry.get("server")) for entry in servers)

    wait_until(daemon_probed, 20, 0.2, "the daemon's certificate probe of the control")
    assert counted.tls_hellos >= 2
    assert gw.status()["last_apply_ok"] and gw.alive()


# --- 3. ports are not taken over (replayed by the test above, on its gateway) ------------------


def _replay_port_takeovers(gw: Gateway, backend_factory: Any, taken: set[int]) -> None:
    """Attack: (1) a second service B claims, with its ``dirac_port``, the hashed public port
    that service A already serves, then re-registers under a new service ID; (2) a service
    claims port 9162, which the shipped port map gives to Framework/SystemAdministrator,
    while SystemAdministrator is not registered at all.

    Safe outcome: B is refused and reported ("taken by A, which claimed it first") both times,
    the port keeps routing to A only (the backend's answer names A's instance); the 9162 claim
    is refused ("belongs to Framework/SystemAdministrator (map)") and never routes to it.
    """
    settings = gw.settings
    low, high = settings.ports.auto_low, settings.ports.auto_high
    a_path, port = hashed_service("Xsys", "Xsvc", low, high, taken)
    gw.register_backend("a", backend_factory(instance="xa1"), "xa1", a_path)
    gw.wait_routed(port, "xa1")
    # Nobody registers Framework/SystemAdministrator on this module's agent: it is absent.
    z_port = backend_factory(instance="z1").port
    gw.register("zmap", "zmap1", z_port, "Xsys/Zsvc", meta={"dirac_port": "9162"})
    b_backend = backend_factory(instance="yb1")
    b1 = gw.register("b", "yb1", b_backend.port, "Xsys/Ysvc", meta={"dirac_port": str(port)})
    taken_by = f"Xsys/Ysvc: public port {port} (meta) is taken by {a_path}, which claimed it first"
    wait_problem(gw, taken_by)
    wait_problem(gw, "Xsys/Zsvc: public port 9162 belongs to Framework/SystemAdministrator (map)")
    gw.wait_only(port, {"xa1"}, streak=8)
    # B again under a new service ID (a new registration, a newer claim): nothing changes.
    gw.deregister(b1)
    wait_until(lambda: not any(taken_by in p for p in problems_of(gw)), 20, 0.1, "B gone")
    gw.register("b", "yb2", b_backend.port, "Xsys/Ysvc", meta={"dirac_port": str(port)})
    wait_problem(gw, taken_by)
    gw.wait_only(port, {"xa1"}, streak=8)
    config = settled(gw.haproxy_cfg)
    endpoints = server_endpoints(config)
    assert f"127.0.0.1:{b_backend.port}" not in endpoints, endpoints  # B is no server at all
    assert f"127.0.0.1:{z_port}" not in endpoints, endpoints  # nor the 9162 claimant
    # 9162 stays its map owner's: at most a declared frontend of SystemAdministrator, rejecting
    # (no server), never the claimant's backend.
    for _ in range(3):
        answer = gw.try_call(9162, timeout=2.0)
        assert answer is None or answer.get("instance") != "z1", answer
    assert gw.status()["last_apply_ok"] and gw.alive()


# --- 2. one unbindable registration harms only itself -----------------------------------------


def _skip_unless_low_ports_need_the_capability() -> None:
    if SETPRIV is None:
        pytest.skip("no setpriv")
    if os.geteuid() != 0:
        pytest.skip("needs root (setpriv --bounding-set)")
    start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    if start < 700:
        pytest.skip(f"ports from {start} up need no capability here (600-699 must)")


def _cap(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_eacces_port_is_left_out_and_the_gateway_keeps_changing(
    gateway_unstarted: Gateway, backend_factory: Any
) -> None:
    """Attack: a registration claims a public port below 1024 (inside the operator's
    ``public_ranges``) on a gateway whose HAProxy lacks CAP_NET_BIND_SERVICE (daemon started
    under ``setpriv`` without it in the bounding set): the reload that adds the frontend fails
    with EACCES, which the daemon's own preflight cannot judge.

    Safe outcome: the daemon learns the port from HAProxy's alert, leaves only that service out
    (reported "cannot be bound: Permission denied"), and the gateway keeps changing: instances
    and services registered afterwards are routed, the status is ready and the last apply ok.
    """
    _skip_unless_low_ports_need_the_capability()
    assert SETPRIV is not None
    gw = gateway_unstarted
    low = next((p for p in range(600, 700) if port_is_free(p)), None)
    if low is None:
        pytest.skip("no free port in 600-699")
    gw.public_ranges = ["600-699", "20000-29999"]
    gw.write_config(gw.config_text() + FAST)
    assert (600, 699) in gw.settings.ports.ranges  # the fixture put them in the settings
    gw.command = [
        SETPRIV,
        "--bounding-set=-net_bind_service",
        "--inh-caps=-net_bind_service",
        *gw.command,
    ]
    gw.start()
    for proc in gw.haproxy_processes():  # really without the capability
        assert not _cap(proc.pid, "CapBnd") & (1 << CAP_NET_BIND_SERVICE), proc.pid
    gw.register_backend("alpha", backend_factory(instance="a1"), "a1", ALPHA)
    gw.wait_routed(gw.ports[ALPHA], "a1")
    gw.register_backend(
        "low",
        backend_factory(instance="low1"),
        "low1",
        "Xsys/LowPort",
        meta={"dirac_port": str(low)},
    )
    wait_problem(gw, "Xsys/LowPort", f"public port {low} cannot be bound: Permission denied")
    gw.wait_log(f"haproxy cannot bind {low} (Permission denied)")
    assert listens_on((gw.runtime_dir / "haproxy.cfg.failed").read_text(), low)  # it was tried
    # The rest keeps changing: new instances (runtime) and a new service (a reload) after it.
    auto = (gw.settings.ports.auto_low, gw.settings.ports.auto_high)
    after, after_port = hashed_service("Xsys", "AfterLow", *auto, {low, *gw.ports.values()})
    gw.register_backend("alpha", backend_factory(instance="a2"), "a2", ALPHA)
    gw.register_backend("beta", backend_factory(instance="b1"), "b1", BETA)
    gw.register_backend("after", backend_factory(instance="n1"), "n1", after)
    gw.wait_routed(gw.ports[ALPHA], "a2")
    gw.wait_routed(gw.ports[BETA], "b1")
    gw.wait_routed(after_port, "n1")
    gw.wait_routed(gw.ports[ALPHA], "a1", timeout=5)
    wait_until(lambda: gw.status().get("last_apply_ok"), 20, 0.1, "a successful apply")
    status = gw.status()
    assert status["ready"] and gw.alive() and status["reload_failures"] >= 1
    assert not listens_on(settled(gw.haproxy_cfg), low) and low not in status["public_ports"]


def test_squatter_appearing_while_the_frontend_is_added(
    gateway_unstarted: Gateway, backend_factory: Any
) -> None:
    """Attack: another process binds a service's public port exactly while the gateway adds
    that frontend (after the daemon's preflight bind test, before HAProxy binds), and other
    catalog changes keep arriving meanwhile.

    Safe outcome: the failed reload is rolled back, the daemon learns EADDRINUSE from HAProxy's
    alert and leaves only that service out (reported "Address already in use"); the changes
    that came in the same batch and after it are applied (new instances and a new service
    routed), and the gateway ends ready with a successful last apply.

    (EADDRNOTAVAIL cannot be produced per service: every frontend binds [gateway] bind; see
    ``test_bind_address_not_local_is_reported_and_the_daemon_keeps_running``.)
    """
    gw = gateway_unstarted
    gw.write_config(gw.config_text() + FAST)
    gw.start()
    settings = gw.settings
    low, high = settings.ports.auto_low, settings.ports.auto_high
    taken: set[int] = set(gw.ports.values())
    # Services in no map or override: their frontends are added by a reload (declared ones
    # are bound, rejecting, from the start).
    late, late_port = hashed_service("Xsys", "Late", low, high, taken)
    later, later_port = hashed_service("Xsys", "Later", low, high, taken)
    gw.register_backend("alpha", backend_factory(instance="a1"), "a1", ALPHA)
    gw.wait_routed(gw.ports[ALPHA], "a1")
    squatter = RaceSquatter(gw.runtime_dir, late_port)
    try:
        gw.register_backend("late", backend_factory(instance="l1"), "l1", late)
        gw.register_backend("alpha", backend_factory(instance="a2"), "a2", ALPHA)
        wait_until(squatter.bound.is_set, 20, 0.005, f"a config adding fe_{late_port} validated")
        assert squatter.sock is not None, f"HAProxy bound the port first: {squatter.error}"
        # More changes while the failed reload is rolled back and learnt from: a new instance
        # (runtime), a new service (a reload).
        gw.register_backend("alpha", backend_factory(instance="a3"), "a3", ALPHA)
        gw.register_backend("later", backend_factory(instance="r1"), "r1", later)
        wait_problem(gw, late, f"public port {late_port} cannot be bound: Address already in use")
        gw.wait_log(f"haproxy cannot bind {late_port} (Address already in use)")
        for port, instance in ((later_port, "r1"), (gw.ports[ALPHA], "a2"),
                               (gw.ports[ALPHA], "a3"), (gw.ports[ALPHA], "a1")):  # fmt: skip
            gw.wait_routed(port, instance)
        wait_until(lambda: gw.status().get("last_apply_ok"), 20, 0.1, "a successful apply")
        status = gw.status()
        assert status["ready"] and gw.alive() and status["reload_failures"] >= 1
        assert not listens_on(settled(gw.haproxy_cfg), late_port)
        assert late_port not in status["public_ports"]
    finally:
        squatter.close()


def test_bind_address_not_local_is_reported_and_the_daemon_keeps_running(
    gateway_unstarted: Gateway, backend_factory: Any
) -> None:
    """EADDRNOTAVAIL, for the whole gateway: ``[gateway] bind`` is not a local address
    (192.0.2.1, TEST-NET-1), so no frontend can ever be bound. (Per service it cannot happen:
    every frontend binds the same [gateway] bind address.)

    Safe outcome: the daemon keeps running and ready, every catalog service is reported
    "cannot be bound: Cannot assign requested address" (the preflight knows EADDRNOTAVAIL for
    sure: no failed reload), nothing is half-applied.
    """
    gw = gateway_unstarted
    gw.write_config(edit(gw.config_text(), 'bind = "127.0.0.1"', 'bind = "192.0.2.1"'))
    gw.start()  # the preflight finds every (declared) port unbindable: no frontend at all
    gw.register_backend("gamma", backend_factory(instance="c1"), "c1", GAMMA)
    gw.register_backend("alpha", backend_factory(instance="a1"), "a1", ALPHA)
    for path in (GAMMA, ALPHA):
        port = gw.ports[path]
        wait_problem(gw, path, f"public port {port} cannot be bound: Cannot assign requested")
    status = gw.status()
    assert gw.alive() and status["ready"] and status["last_apply_ok"], status
    assert status["public_ports"] == [], status["public_ports"]
    assert not re.search(r"(?m)^frontend ", settled(gw.haproxy_cfg))
    assert status["reload_failures"] == 0


# --- 4. discovered gateway names ----------------------------------------------------------------


def test_discovered_gateway_names_need_an_own_passing_check_and_an_allowed_suffix(
    gateway_unstarted: Gateway, backend_factory: Any, consul_writes: ConsulWrites
) -> None:
    """Attack: with ``[dirac_cs] discover_gateways = true``, register ``dirac-gateway``
    services that advertise names: "evil.example.com" without any check (Consul counts that
    as passing), "evil-gw.test" under the gateway's own suffix but without a check of its own,
    and "evil-checked.example.com" with a passing check of its own but outside the suffix.

    Safe outcome: none of these names ever appears in the CS file (after the first write and
    after a later one), the gateway's own names do, and the refusal is logged.
    """
    gw = gateway_unstarted
    cs_file = gw.tmp / "dirac.cfg"
    shutil.copyfile(CS_DATA, cs_file)
    lock_key = f"dirac-sidecar/test/{uuid.uuid4().hex}/lock"
    gw.write_config(
        gw.config_text() + f'\n[dirac_cs]\nenabled = true\nfile = "{cs_file}"\n'
        f'discover_gateways = true\nlock_key = "{lock_key}"\nlock_delay = "0s"\n'
        'lock_ttl = "10s"\n'
    )
    evil = {"evil.example.com": None, "evil-gw.test": None, "evil-checked.example.com": "passing"}
    for n, (name, check) in enumerate(evil.items()):
        body: dict[str, Any] = {
            "Name": "dirac-gateway",
            "ID": f"{gw.prefix}-evil{n}",
            "Address": "127.0.0.1",
            "Port": 1,
            "Tags": [],
            "Meta": {"gateway_names": name},
        }
        if check:
            body["Check"] = {"CheckID": f"{gw.prefix}-evil{n}-ttl", "TTL": "1h", "Status": check}
        consul_writes.agent_service(body)
    gw.start()
    gw.register_backend("alpha", backend_factory(instance="a1"), "a1", ALPHA)
    gw.wait_routed(gw.ports[ALPHA], "a1")
    own = [f"dips://{name}:{gw.ports[ALPHA]}/{ALPHA}" for name in gw.names]

    def written(urls: list[str]) -> bool:
        text = cs_file.read_text()
        return all(url in text for url in urls)

    wait_until(lambda: written(own), 30, 0.2, "the gateway's own URLs in the CS file")
    gw.wait_log("gateway names not advertised")
    gw.register_backend("beta", backend_factory(instance="b1"), "b1", BETA)  # a second write
    own_beta = [f"dips://{name}:{gw.ports[BETA]}/{BETA}" for name in gw.names]
    wait_until(lambda: written(own_beta), 30, 0.2, "the second write")
    text = cs_file.read_text()
    for name in evil:
        assert name not in text, f"{name} advertised in the CS"
    refused = [line for line in gw.log_text().splitlines() if "not advertised" in line]
    assert all(name in " ".join(refused) for name in evil), refused


# --- 5. the token ------------------------------------------------------------------------------

ENV_TOKEN, FILE_TOKEN = "env-secret-xyz", "file-token-abc"


def test_configured_token_wins_and_leaks_nowhere(
    consul_proxy: RecordingConsulProxy, gateway_unstarted: Gateway, backend_factory: Any
) -> None:
    """Attack surface: a daemon started with ``CONSUL_HTTP_TOKEN`` in its environment and a
    different ``[consul] token`` in its settings (py-consul on its own prefers the environment);
    the children it starts (HAProxy) live for days with a readable ``/proc/<pid>/environ``.

    Safe outcome: every request reaching Consul (through a recording proxy) carries the
    configured token and none the environment's; HAProxy's master and workers have neither in
    their environment; neither appears in the DEBUG log, in any runtime file, or in ``repr`` of
    the loaded settings.
    """
    gw = gateway_unstarted
    text = edit(
        gw.config_text(),
        f'address = "{gw.agent.http_addr}"',
        f'address = "{consul_proxy.address}"\ntoken = "{FILE_TOKEN}"\nwait = "5s"',
    )
    gw.write_config(text)
    start_with_env(gw, {"CONSUL_HTTP_TOKEN": ENV_TOKEN})
    gw.register_backend("alpha", backend_factory(instance="a1"), "a1", ALPHA)
    gw.wait_routed(gw.ports[ALPHA], "a1")

    def fleet_calls_seen() -> bool:  # the fleet member's client too, not only the watches
        paths = [r.path for r in consul_proxy.recorded()]
        return any(p.startswith("/v1/agent/service/register") for p in paths) and any(
            p.startswith("/v1/agent/check/pass/") for p in paths
        )

    wait_until(fleet_calls_seen, 20, 0.1, "the gateway registering itself through the proxy")
    recorded = consul_proxy.recorded()
    assert any(r.path.startswith("/v1/health/service/") for r in recorded)
    assert {r.token for r in recorded} == {FILE_TOKEN}, {(r.path, r.token) for r in recorded}
    assert not any(ENV_TOKEN.encode() in r.raw for r in recorded)
    # HAProxy's environment: scrubbed.
    procs = gw.haproxy_processes()
    assert len(procs) >= 2, procs  # master and worker
    for proc in procs:
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
        assert ENV_TOKEN.encode() not in environ and FILE_TOKEN.encode() not in environ
        assert b"CONSUL_HTTP_TOKEN" not in environ, proc.pid
    # The log (DEBUG), the runtime directory, the settings' repr.
    log = gw.log_path.read_bytes()
    assert b" DEBUG " in log
    assert ENV_TOKEN.encode() not in log and FILE_TOKEN.encode() not in log
    for path in at_rest(gw.runtime_dir):
        if path.is_file():
            data = path.read_bytes()
            assert ENV_TOKEN.encode() not in data and FILE_TOKEN.encode() not in data, path
    env = {"CONSUL_HTTP_TOKEN": ENV_TOKEN}
    loaded = load_settings(str(gw.config_path), env=env)
    assert loaded.consul.token.get_secret_value() == FILE_TOKEN  # the file wins
    plain = gw.tmp / "no-token.toml"
    plain.write_text(text.replace(f'token = "{FILE_TOKEN}"\n', ""))
    from_env = load_settings(str(plain), env=env)
    assert from_env.consul.token.get_secret_value() == ENV_TOKEN  # folded in from the env
    for settings in (loaded, from_env):
        for shown in (repr(settings), str(settings), repr(settings.consul)):
            assert ENV_TOKEN not in shown and FILE_TOKEN not in shown


# --- 6. inert text ------------------------------------------------------------------------------


def test_catalog_text_cannot_forge_log_lines_or_reach_the_terminal(
    gateway_unstarted: Gateway, backend_factory: Any, consul_writes: ConsulWrites
) -> None:
    """Attack: through the catalog API (which takes any node name) register instances whose
    Node name and Service ID hold a newline followed by a forged log record and an ESC
    sequence: one valid (served, then failing: its key goes through the blast-radius guard's
    log lines raw), one malformed (reported as skipped); and a ``dirac-gateway`` on such a
    node, with such metadata, for ``sidecar status --fleet``.

    Safe outcome: the daemon's log (read as bytes) has no line starting with the forged
    record and no ESC byte, yet shows the hostile text escaped; ``status --fleet`` prints no
    ESC (nor BEL) byte and no forged line either.
    """
    gw = gateway_unstarted
    gw.write_config(gw.config_text() + FAST)
    gw.start()
    node = f"{gw.prefix}-node{CLEAR_SCREEN}{FORGED}"
    backend = backend_factory(instance="h1")
    meta = {"dirac_system": "Framework", "dirac_service": "GwAlpha"}

    def hostile(
        service_id: str, port: int, meta: dict[str, str], status: str, name: str, tags: list[str]
    ) -> dict[str, Any]:
        return {
            "Node": node,
            "Address": "127.0.0.1",
            "Service": {
                "Service": name,
                "ID": service_id,
                "Address": "127.0.0.1",
                "Port": port,
                "Tags": tags,
                "Meta": meta,
            },
            "Check": {
                "Node": node,
                "CheckID": f"chk-{service_id[:8]}",
                "Name": "hostile",
                "Status": status,
                "ServiceID": service_id,
            },
        }

    good_id = f"h1{FORGED}{CLEAR_SCREEN}"
    dirac_name = gw.consul_name("hostile")
    consul_writes.catalog(hostile(good_id, backend.port, meta, "passing", dirac_name, ["dirac"]))
    bad_meta = {"dirac_system": "Framework", "dirac_service": f"Bad{CLEAR_SCREEN}{FORGED}"}
    consul_writes.catalog(
        hostile(
            f"bad{FORGED}{CLEAR_SCREEN}",
            1,
            bad_meta,
            "passing",
            gw.consul_name("hostilebad"),
            ["dirac"],
        )
    )
    fleet_meta = {
        "gateway_names": f"evil{CLEAR_SCREEN}.test",
        "generation": "\x1b]0;pwn\x07",
        "catalog_index": "1",
    }
    consul_writes.catalog(
        hostile(
            f"dirac-gateway{CLEAR_SCREEN}{FORGED}", 1, fleet_meta, "passing", "dirac-gateway", []
        )
    )
    gw.wait_routed(gw.ports[ALPHA], "h1")
    wait_problem(gw, "hostilebad", "is not a DIRAC name")
    # The served instance fails: the guard holds it (100 % of the backend), a second read
    # confirms it, and that line carries the instance key as %s, not as a repr.
    consul_writes.catalog(hostile(good_id, backend.port, meta, "critical", dirac_name, ["dirac"]))
    gw.wait_log("removal confirmed by a second read")
    code, fleet_out = run_cli(gw, "status", "--fleet")
    log = gw.log_path.read_bytes()
    forged = FORGED.strip().encode()
    for where, data in (("the daemon log", log), ("status --fleet", fleet_out)):
        assert b"\x1b" not in data and b"\x07" not in data, f"raw control byte in {where}"
        lines = data.splitlines()
        assert not [ln for ln in lines if ln.lstrip().startswith(forged)], f"forged in {where}"
        assert b"\\x1b[2J" in data, f"the hostile text did not reach {where} (escaped)"
    confirmed = [ln for ln in log.splitlines() if b"removal confirmed by a second read" in ln]
    assert confirmed and all(b"\\n2026-01-01 ERROR forged line" in ln for ln in confirmed)
    assert code in (0, 1) and b"GATEWAY" in fleet_out, fleet_out


# --- 7. bounds ---------------------------------------------------------------------------------


def test_limits_cap_instances_and_problems(
    gateway_unstarted: Gateway, backend_factory: Any
) -> None:
    """Attack: flood one DIRAC service with instances (5 with ``[limits] max_instances = 3``)
    and the catalog with malformed registrations (10 with ``max_problems = 5``).

    Safe outcome: the 3 oldest registrations (Consul's CreateIndex) serve, the 2 newer never
    answer, reported "max_instances = 3 reached"; the status keeps 5 problems plus one
    "more not shown" line; the gateway keeps serving.
    """
    gw = gateway_unstarted
    gw.write_config(gw.config_text() + "\n[limits]\nmax_instances = 3\nmax_problems = 5\n")
    gw.start()
    port = gw.ports[ALPHA]
    ports: dict[str, int] = {}
    for n in range(5):  # one by one: CreateIndex follows the registration order
        backend = backend_factory(instance=f"i{n}")
        ports[f"i{n}"] = backend.port
        gw.register_backend("alpha", backend, f"i{n}", ALPHA)
        gw.wait_in_catalog("alpha", n + 1)
    entries = consul.health(gw.agent.http_addr, gw.consul_name("alpha"))
    by_age = sorted(entries, key=lambda e: (e["Service"]["CreateIndex"], e["Service"]["ID"]))
    oldest = {e["Service"]["ID"].removeprefix(f"{gw.prefix}-") for e in by_age[:3]}
    wait_problem(gw, f"{ALPHA}: [limits] max_instances = 3 reached; 2 newer instances unused")
    for instance in sorted(oldest):
        gw.wait_routed(port, instance)
    gw.wait_only(port, oldest, streak=12)
    endpoints = set(server_endpoints(settled(gw.haproxy_cfg)))
    rendered = {name for name, p in ports.items() if f"127.0.0.1:{p}" in endpoints}
    assert rendered == oldest, endpoints  # the newer two are not even servers

    for n in range(10):
        gw.register(
            "junk",
            f"bad{n}",
            1000 + n,
            dirac=None,
            meta={"dirac_system": "Framework", "dirac_service": f"Bad-{n}"},
        )
    expected_more = "problems: 6 more not shown ([limits] max_problems)"  # 11 - 5

    def capped() -> bool:
        found = problems_of(gw)
        return len(found) == 6 and found[-1] == expected_more

    wait_until(capped, 20, 0.1, "the problems capped at 5 plus a 'more not shown' line")
    gw.wait_only(port, oldest, streak=6)
    assert gw.status()["last_apply_ok"] and gw.alive()


# --- a gap: the status endpoint on an ephemeral port ----------------------------------------


def _listening_ports(pid: int) -> set[int]:
    return {
        c.laddr.port
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }


def test_status_endpoint_on_an_ephemeral_port_is_refused_too(gateway: Gateway) -> None:
    """Attack: ``[status] listen = "127.0.0.1:0"`` (the fixture's setting: the endpoint takes
    an ephemeral port); register a backend at 127.0.0.1:<the port it really listens on> with a
    ``dirac_port`` inside the public ranges, loopback being allowed by ``backend_networks``.

    Safe outcome (what the product promises): refused as an endpoint of the gateway's own
    services, and its public port gets no HTTP answer.
    """
    gw = gateway
    assert gw.settings.status.listen == "127.0.0.1:0"
    real = wait_until(lambda: _listening_ports(gw.pid), 10, 0.1, "the status endpoint")
    (status_port,) = real
    assert http_answer(status_port, path="/metrics").startswith(b"HTTP/1.")
    settings = gw.settings
    public = free_port_in(settings.ports.auto_low, settings.ports.auto_high, set(gw.ports.values()))
    sid = gw.register(
        "status", "relay", status_port, "Xsys/RelayStatus", meta={"dirac_port": str(public)}
    )

    def judged() -> str:  # either refused, or rendered: then the relay is live
        if listens_on(settled(gw.haproxy_cfg), public):
            return "rendered"
        return next((p for p in problems_of(gw) if instance_needle(gw, sid) in p), "")

    verdict = wait_until(judged, 20, 0.1, "the registration judged")
    if verdict == "rendered":
        wait_until(lambda: http_answer(public, path="/metrics"), 10, 0.2, "an answer")
    assert b"HTTP/" not in http_answer(public, path="/metrics"), "relays the status endpoint"
    assert "own services" in verdict, verdict

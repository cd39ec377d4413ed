"""Long DIRAC calls through the gateway across settings reloads (issue 14, item 3).

A DISET call may stay silent for 600 s and sandbox transfers run longer. A TLS echo backend
(client certificate required, like DIRAC) sends back every byte it gets.

- A call opened before a settings reload (SIGHUP with a changed ``hard_stop_after``: the
  config changes, HAProxy reloads) and silent for longer than the reload takes, then carrying
  data both ways, survives: the old worker keeps it; a catalog change meanwhile (a second
  instance, runtime path) does not touch it either. Once it ends, the old worker exits.
- At ``hard_stop_after`` (2 s here) the old worker is stopped and the call is cut: measured.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import pytest
from gatewaylib import Gateway
from helpers import wait_until

from devkit.backend import server_context
from devkit.client import client_context
from devkit.pki import DevPKI
from sidecar.core.answers import ProcInfo

pytestmark = pytest.mark.timeout(120)
ALPHA = "Framework/GwAlpha"


class EchoBackend:
    """A TLS server that sends back every byte it gets until the client closes."""

    def __init__(self, pki: DevPKI) -> None:
        self.context = server_context(
            pki.host_cert("backend1"), pki.host_key("backend1"), ca_dir=pki.ca_dir
        )
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        conn.settimeout(60)
        with contextlib.suppress(OSError, ValueError), self.context.wrap_socket(
            conn, server_side=True
        ) as tls:  # fmt: skip
            while not self._stop.is_set():
                data = tls.recv(65536)
                if not data:
                    return
                tls.sendall(data)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()


@pytest.fixture
def echo(pki: DevPKI) -> Iterator[EchoBackend]:
    backend = EchoBackend(pki)
    yield backend
    backend.stop()


def open_call(gw: Gateway, pki: DevPKI) -> ssl.SSLSocket:
    """A TLS connection through the gateway (SNI = gateway name), one exchange done."""
    raw = socket.create_connection(("127.0.0.1", gw.ports[ALPHA]), timeout=10)
    tls = client_context(pki.proxy, pki.ca_dir).wrap_socket(raw, server_hostname=gw.server_name)
    exchange(tls, b"hello")
    return tls


def exchange(tls: ssl.SSLSocket, data: bytes) -> None:
    tls.sendall(data)
    expected = data
    got = b""
    while len(got) < len(expected):
        chunk = tls.recv(65536)
        assert chunk, f"connection closed after {got!r}"
        got += chunk
    assert got == expected


def start(gw: Gateway, hard_stop_after: str) -> Gateway:
    gw.write_config(
        gw.config_text().replace(
            'hard_stop_after = "30s"', f'hard_stop_after = "{hard_stop_after}"'
        )
    )
    return gw.start()


def reload_with(gw: Gateway, hard_stop_after: str) -> float:
    """SIGHUP with a changed ``hard_stop_after``; seconds until HAProxy has reloaded."""
    before = gw.reload_count()
    text = gw.config_path.read_text()
    gw.write_config(
        text.replace('hard_stop_after = "', f'hard_stop_after = "{hard_stop_after}"  # was "', 1)
    )
    started = time.monotonic()
    gw.sighup()
    wait_until(lambda: reloads(gw) > before, 20, 0.02, "the settings reload")
    return time.monotonic() - started


def proc(gw: Gateway) -> ProcInfo | None:
    """HAProxy's ``show proc``, None while the master does not answer (it re-executes itself
    on every reload: its socket is gone for a moment)."""
    try:
        return gw.haproxy.proc()
    except OSError:
        return None


def reloads(gw: Gateway) -> int:
    info = proc(gw)
    return -1 if info is None else info.reloads


def old_workers(gw: Gateway) -> int:
    info = proc(gw)
    return -1 if info is None else len(info.old_workers)


def wait_echo_routed(gw: Gateway, pki: DevPKI) -> None:
    def answers() -> bool:
        try:
            open_call(gw, pki).close()
            return True
        except (OSError, AssertionError):
            return False

    wait_until(answers, 20, 0.1, "the echo backend routed")


def test_a_silent_long_call_survives_a_settings_reload(
    gateway_unstarted: Gateway, pki: DevPKI, echo: EchoBackend, backend_factory
) -> None:
    gw = start(gateway_unstarted, "60s")
    gw.register("alpha", "echo-1", echo.port, ALPHA)
    wait_echo_routed(gw, pki)
    call = open_call(gw, pki)
    opened = time.monotonic()
    try:
        took = reload_with(gw, "61s")
        assert wait_until(lambda: old_workers(gw) >= 1, 5, 0.05, "the old worker")  # holds it
        other = backend_factory(instance="x1")
        gw.register_backend("beta", other, "x1", ALPHA)  # a catalog change: runtime path
        gw.wait_log("x1", 20)
        silent = max(3.0, 2 * took)  # silent longer than the reload took, and then some
        time.sleep(max(0.0, opened + silent - time.monotonic()))  # the silence IS the test
        for size in (10, 100_000):  # both ways, small and large
            exchange(call, b"x" * size)
        print(f"\n[long call] reload took {took:.2f} s; the call was silent "
              f"{time.monotonic() - opened:.1f} s, then carried 100 kB each way")  # fmt: skip
    finally:
        call.close()
    ended = time.monotonic()
    wait_until(lambda: old_workers(gw) == 0, 20, 0.1, "the old worker to exit")
    print(f"[long call] old worker gone {time.monotonic() - ended:.2f} s after the call ended")


def test_hard_stop_after_cuts_a_long_call(
    gateway_unstarted: Gateway, pki: DevPKI, echo: EchoBackend
) -> None:
    gw = start(gateway_unstarted, "2s")
    gw.register("alpha", "echo-1", echo.port, ALPHA)
    wait_echo_routed(gw, pki)
    call = open_call(gw, pki)
    try:
        took = reload_with(gw, "3s")  # the old worker got the old value: 2 s
        reloaded = time.monotonic()
        exchange(call, b"still there")  # alive right after the reload
        call.settimeout(15)
        try:
            while call.recv(65536):
                pass
            cut = "closed"
        except OSError as exc:
            cut = type(exc).__name__
        after = time.monotonic() - reloaded
        print(f"\n[long call] hard_stop_after 2 s: reload {took:.2f} s, the call cut "
              f"{after:.2f} s after it ({cut})")  # fmt: skip
        assert 1.5 <= after <= 6.0
        wait_until(lambda: old_workers(gw) == 0, 5, 0.05, "the old worker to exit")
        new = open_call(gw, pki)  # new calls go to the new worker
        new.close()
    finally:
        call.close()

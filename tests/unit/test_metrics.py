"""Metrics in their own registry, and the loopback HTTP endpoint on a free port."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import free_port, wait_until
from prometheus_client import REGISTRY

from sidecar.config.ops import StatusSettings
from sidecar.health.endpoint import StatusServer
from sidecar.health.metrics import Metrics, update_from_status

NOW = 1_900_000_000.0


def status(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "pid": 1, "heartbeat": NOW - 1, "ready": True, "catalog_ok_at": NOW - 4,
        "catalog_error": "", "catalog_index": 4242, "consul_requests": 10,
        "applies": {"runtime": 3, "reload": 2}, "reload_failures": 1, "last_apply_ok": True,
        "problems": ["Framework/X: bad port"], "public_ports": [9135],
        "certs": {"status": "OK", "summary": "ok", "servers": [
            {"backend": "Framework_Sample", "server": "s1", "days_left": 99.5, "status": "OK"}]},
    }  # fmt: skip
    base.update(changes)
    return base


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels or None)


def test_metrics_from_status() -> None:
    m = Metrics()
    update_from_status(m, status(), NOW, servers_up={"Framework_Sample": 2}, old_workers=1,
                       lock_holder=True)  # fmt: skip
    assert value(m, "sidecar_catalog_sync_age_seconds") == 4
    assert value(m, "sidecar_consul_index") == 4242
    assert value(m, "sidecar_applies_total", kind="runtime") == 3
    assert value(m, "sidecar_applies_total", kind="reload") == 2
    assert value(m, "sidecar_reload_failures_total") == 1
    assert value(m, "sidecar_haproxy_old_workers") == 1
    assert value(m, "sidecar_backend_servers_up", backend="Framework_Sample") == 2
    assert (
        value(m, "sidecar_certificate_days_left", backend="Framework_Sample", server="s1") == 99.5
    )
    assert value(m, "sidecar_lock_holder") == 1
    assert value(m, "sidecar_problems") == 1
    assert value(m, "sidecar_catalog_errors_total") == 0
    text = m.render().decode()
    for name in ("sidecar_catalog_sync_age_seconds", "sidecar_catalog_errors_total",
                 "sidecar_consul_index", "sidecar_applies_total", "sidecar_reload_duration_seconds",
                 "sidecar_reload_failures_total", "sidecar_haproxy_old_workers",
                 "sidecar_backend_servers_up", "sidecar_certificate_days_left",
                 "sidecar_lock_holder", "sidecar_problems"):  # fmt: skip
        assert f"# TYPE {name.removesuffix('_total')}" in text, name


def test_counters_advance_by_differences_and_errors_count_episodes() -> None:
    m = Metrics()
    update_from_status(m, status(), NOW)
    update_from_status(m, status(applies={"runtime": 5, "reload": 2}, catalog_error="refused"), NOW)
    update_from_status(m, status(applies={"runtime": 5, "reload": 2}, catalog_error="refused"), NOW)
    update_from_status(m, status(catalog_error=""), NOW)
    update_from_status(m, status(catalog_error="ACL denied"), NOW)
    assert value(m, "sidecar_applies_total", kind="runtime") == 5
    assert value(m, "sidecar_catalog_errors_total") == 2


def test_gone_backends_disappear_and_reload_durations_are_observed() -> None:
    m = Metrics()
    update_from_status(m, status(), NOW, servers_up={"A": 1, "B": 2})
    update_from_status(m, status(), NOW, servers_up={"B": 2})
    assert value(m, "sidecar_backend_servers_up", backend="A") is None
    m.observe_reload(0.3)
    assert value(m, "sidecar_reload_duration_seconds_count") == 1


def test_registries_are_private() -> None:
    Metrics()
    Metrics()  # a second daemon in the same process does not collide
    assert REGISTRY.get_sample_value("sidecar_consul_index") is None


@pytest.fixture
def server() -> Iterator[tuple[StatusServer, Metrics, list[float]]]:
    clock = [NOW]
    metrics = Metrics()
    srv = StatusServer(metrics, StatusSettings(listen=f"127.0.0.1:{free_port()}"),
                       clock=lambda: clock[0])  # fmt: skip
    srv.start()
    try:
        yield srv, metrics, clock
    finally:
        srv.stop()


def get(srv: StatusServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_http_endpoints(server: tuple[StatusServer, Metrics, list[float]]) -> None:
    srv, metrics, clock = server
    assert get(srv, "/healthz")[0] == 503  # nothing published yet
    assert get(srv, "/readyz") == (503, "no successful apply yet\n")
    update_from_status(metrics, status(), NOW)
    assert get(srv, "/healthz")[0] == 200
    assert get(srv, "/readyz") == (200, "ready, catalog 4s old\n")
    code, text = get(srv, "/metrics")
    assert code == 200
    assert "sidecar_consul_index 4242.0" in text
    clock[0] = NOW + 400  # the daemon stopped publishing: heartbeat and catalog go stale
    assert get(srv, "/healthz")[0] == 503
    assert get(srv, "/readyz")[0] == 503
    assert get(srv, "/nope")[0] == 404


def test_stop_closes_the_socket() -> None:
    port = free_port()
    srv = StatusServer(Metrics(), StatusSettings(listen=f"127.0.0.1:{port}"))
    srv.start()
    assert get(srv, "/healthz")[0] == 503
    srv.stop()
    srv.stop()  # idempotent
    again = StatusServer(Metrics(), StatusSettings(listen=f"127.0.0.1:{port}"))
    again.start()  # the port is free again
    again.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_the_serving_thread_wakes_only_for_a_client_or_the_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No polling for a shutdown flag (``serve_forever`` wakes every ``poll_interval``): the
    thread's select returns once for the request and once for the stop, however long the
    server idled in between."""
    import selectors

    from sidecar.health import endpoint

    returns: list[int] = []

    class Counting(selectors.PollSelector):
        def select(self, timeout: float | None = None) -> list[Any]:
            ready = super().select(timeout)
            returns.append(len(ready))
            return ready

    monkeypatch.setattr(endpoint.selectors, "PollSelector", Counting)
    srv = StatusServer(Metrics(), StatusSettings(listen="127.0.0.1:0"))
    srv.start()
    assert get(srv, "/healthz")[0] == 503
    srv.stop()
    assert returns == [1, 1]


# --- clients that do not play along: closed after status.idle_timeout ------------------------

IDLE = 0.5


@pytest.fixture
def impatient() -> Iterator[StatusServer]:
    srv = StatusServer(Metrics(), StatusSettings(listen="127.0.0.1:0", idle_timeout=IDLE))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def request_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if "process_request_thread" in t.name}


def until_closed(sock: socket.socket, trickle: bytes = b"", bound: float = 5.0) -> bytes:
    """What the server sent before closing ``sock``; sends ``trickle`` a byte every 50 ms."""
    sock.settimeout(0.05)
    received = b""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        try:
            if trickle:
                sock.send(trickle[:1])
                trickle = trickle[1:]
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the server kept the connection open for {bound}s")


@pytest.mark.parametrize(
    "trickle",
    [b"", b"GET /metrics HTTP/1.0\r\nX-Slow: " + b"a" * 1000],
    ids=["silent", "slow-loris"],
)
def test_a_client_that_does_not_send_its_request_is_dropped(
    impatient: StatusServer, trickle: bytes
) -> None:
    before = request_threads()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=5) as sock:
        received = until_closed(sock, trickle)
    elapsed = time.monotonic() - started
    assert received == b""  # dropped, not answered
    assert IDLE * 0.8 <= elapsed < IDLE + 1.5, elapsed
    wait_until(lambda: not (request_threads() - before), timeout=2, what="the handler thread")
    assert get(impatient, "/healthz")[0] == 503  # and the server still serves others

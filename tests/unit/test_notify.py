"""The systemd notify protocol, received on a real AF_UNIX datagram socket."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.health import notify
from sidecar.health.notify import Notifier


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    try:
        yield sock, path
    finally:
        sock.close()


def receive(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_messages_arrive(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("serving 3 services")
    assert receive(sock) == ["READY=1", "STATUS=serving 3 services"]
    assert n.watchdog()
    assert receive(sock) == ["WATCHDOG=1"]
    assert n.status("line one\nline two")
    assert receive(sock) == ["STATUS=line one line two"]  # STATUS= stays one line
    assert n.stopping()
    assert receive(sock) == ["STOPPING=1"]


def test_reloading_carries_monotonic_usec(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert Notifier({"NOTIFY_SOCKET": path}).reloading("reloading config")
    lines = receive(sock)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert before <= int(lines[1].split("=", 1)[1]) <= after
    assert lines[2] == "STATUS=reloading config"


def test_abstract_socket() -> None:
    name = f"dirac-sidecar-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert receive(sock) == ["READY=1"]
    finally:
        sock.close()


def test_module_functions_use_the_environment(
    receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert notify.ready()
    assert receive(sock) == ["READY=1"]
    assert notify.watchdog()
    assert receive(sock) == ["WATCHDOG=1"]


def test_no_socket_is_a_noop(tmp_path: Path) -> None:
    assert not Notifier({}).enabled
    assert not Notifier({}).ready()
    assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).ready()
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")}).watchdog()


def test_watchdog_interval() -> None:
    me = str(os.getpid())
    assert Notifier({}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval() == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": me}).watchdog_interval() == 15.0
    assert (
        Notifier(
            {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}
        ).watchdog_interval()
        is None
    )
    assert Notifier({"WATCHDOG_USEC": "junk"}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval() is None

"""devkit.ports: the tests' free ports come from outside the kernel's ephemeral range (where
any outgoing connection may take them before they are listened on), one slice per worker."""

from __future__ import annotations

import socket

import pytest

from devkit import ports


def test_a_free_port_is_below_the_ephemeral_range_and_bindable() -> None:
    low, high = ports._slice()
    assert ports.LOW <= low < high <= min(ports.HIGH, ports._ephemeral_low())
    for _ in range(20):
        port = ports.free_port()
        assert low <= port < high
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free: this would raise


def test_ports_asked_in_a_row_are_distinct() -> None:
    # a test asks for several ports before it binds any: the same one twice would make two
    # services claim one port (seen in CI with random picks)
    picked = [ports.free_port() for _ in range(300)]
    assert len(set(picked)) == len(picked)


def test_workers_get_disjoint_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    first = ports._slice()
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    second = ports._slice()
    assert first[1] <= second[0] and second[1] <= ports.HIGH


def test_a_taken_port_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        monkeypatch.setattr(ports, "_slice", lambda: (taken, taken + 16))
        assert all(ports.free_port() != taken for _ in range(50))  # checked by a bind

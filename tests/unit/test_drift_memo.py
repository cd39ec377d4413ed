"""Drift repair reads ``show servers state`` every ``drift_interval``; unchanged and clean,
it stops at the rows (issue 13: idle CPU at 1,000 services x 5 instances).

A stub HAProxy serves a state text; ``find_drift`` is counted. The check must still run in
full when anything it compares changes: the servers' rows, the desired state, the backends.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import cast

import pytest
from test_runtime_state import HEADER  # the 2.6 header of show servers state

from sidecar.config.loader import parse_settings
from sidecar.core.answers import parse_servers_state, servers_state_digest
from sidecar.core.model import Backend, DesiredState, Protocol, Server, ServerState
from sidecar.haproxy import applier as applier_module
from sidecar.haproxy.applier import Applier
from sidecar.haproxy.process import HAProxy


def state(port: int = 19001, since: int = 37) -> str:
    line = f"5 bk_F_S 1 s1 127.0.0.1 2 0 1 1 {since} 6 3 3 6 0 0 0 - {port} - 0 0 - - 0"
    return f"1\n{HEADER}\n{line}\n"


class StubHAProxy:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.config = directory / "haproxy.cfg"
        self.text = state()
        self.commands: list[str] = []

    def servers_state(self) -> str:
        return self.text

    def backend_names(self) -> frozenset[str]:
        return frozenset({"bk_F_S"})

    def runtime(self, commands: list[str]) -> list[str]:
        self.commands += commands
        return []

    def command(self, text: str) -> str:
        return "Server deleted."


SERVER = Server("s1", "127.0.0.1", 19001, ServerState.READY)
DESIRED = DesiredState((Backend("F", "S", Protocol.DIPS, 9000, (SERVER,)),))


@pytest.fixture
def setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Applier, StubHAProxy, list[int]]:
    stub = StubHAProxy(tmp_path)
    calls: list[int] = []
    real = applier_module.find_drift

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(applier_module, "find_drift", counted)
    return Applier(cast(HAProxy, stub)), stub, calls


SETTINGS = parse_settings({}, "<test>", env={})


Setup = tuple[Applier, StubHAProxy, list[int]]


def test_clean_and_unchanged_stops_at_the_rows(setup: Setup) -> None:
    app, stub, calls = setup
    assert app.repair_drift(DESIRED, SETTINGS) is False
    stub.text = state(since=99)  # only a timer column moved
    app.repair_drift(DESIRED, SETTINGS)
    assert len(calls) == 1 and stub.commands == []


def test_a_changed_server_is_repaired(setup: tuple[Applier, StubHAProxy, list[int]]) -> None:
    app, stub, calls = setup
    app.repair_drift(DESIRED, SETTINGS)
    stub.text = state(port=19999)  # someone pointed the server elsewhere by hand
    app.repair_drift(DESIRED, SETTINGS)
    assert len(calls) == 2
    assert any("19001" in command for command in stub.commands)


def test_a_new_desired_state_is_checked_in_full(setup: Setup) -> None:
    app, stub, calls = setup
    app.repair_drift(DESIRED, SETTINGS)
    app.repair_drift(DesiredState(DESIRED.backends), SETTINGS)  # a new object, equal: clean
    assert len(calls) == 1
    moved = dataclasses.replace(SERVER, port=19002)
    app.repair_drift(DesiredState((dataclasses.replace(DESIRED.backends[0], servers=(moved,)),)),
                     SETTINGS)  # fmt: skip
    assert len(calls) == 2 and any("19002" in command for command in stub.commands)


def test_the_columns_read_become_values() -> None:
    (found,) = parse_servers_state(state())
    assert (found.backend, found.server.name, found.server.address, found.server.port) == (
        "bk_F_S", "s1", "127.0.0.1", 19001)  # fmt: skip
    assert parse_servers_state("1\n# be_name srv_name\nbk x\n") == ()  # columns missing


def test_the_digest_follows_the_columns_read_and_nothing_else() -> None:
    """What the memo compares: the same rows give the same digest whatever the columns drift
    repair does not read (time since the last change), any column it reads changes it."""
    assert servers_state_digest(state(since=37)) == servers_state_digest(state(since=900))
    assert servers_state_digest(state(port=19001)) != servers_state_digest(state(port=19002))
    two = state() + "5 bk_F_S 2 s2 127.0.0.1 2 0 1 1 5 6 3 3 6 0 0 0 - 19003 - 0 0 - - 0\n"
    assert servers_state_digest(two) != servers_state_digest(state())
    # a server renamed (a column read) changes it
    assert servers_state_digest(state().replace("bk_F_S 1 s1", "bk_F_S 1 s1x")) != (
        servers_state_digest(state()))

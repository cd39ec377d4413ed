"""After a failed call to the local agent, the next heartbeat registers anew (issue 14 CI).

Consul 1.8's agent syncs a check to the servers when its status changes and, when that sync
fails (no quorum, no leader yet), retries an unchanged check only at its next full sync, a
minute or more later. Meanwhile the servers keep the check critical: they refuse the CS
writer's session and show the gateway critical. A registration always syncs, so after any
failure (or a "critical state" refusal) the writer check and the gateway registration are
registered again instead of only passed. A scripted agent records what is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest

from sidecar.base.errors import CatalogError, CSError
from sidecar.consul.client import ConsulClient, Reply
from sidecar.fleet.lock import CSLock
from sidecar.fleet.registry import GatewayRegistry
from sidecar.fleet.writer_check import WriterCheck

OK = Reply(200, True, "true")
PASS = "PUT /v1/agent/check/pass/service:dirac-sidecar-cs-writer-vm-gw"
Script = Callable[[str, str], Reply | None]


class Agent:
    """Answers 200 unless ``script`` returns a reply or raises; records ``METHOD path``."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.script: Script = lambda method, path: None

    def send(self, method: str, path: str, params: Any = (), content: str = "") -> Reply:
        self.sent.append(f"{method} {path}")
        answer = self.script(method, path)
        if path == "/v1/session/create" and answer is None:
            return Reply(200, {"ID": "s1"}, '{"ID": "s1"}')
        return answer or OK

    def registrations(self) -> int:
        return sum(line.endswith("/v1/agent/service/register") for line in self.sent)


def timeout_on(fragment: str) -> Script:
    def script(method: str, path: str) -> Reply | None:
        if fragment in path:
            raise CatalogError(f"{method} {path}: ReadTimeout: timed out")
        return None

    return script


def client(agent: Agent) -> ConsulClient:
    return cast(ConsulClient, agent)


def test_writer_check_registers_again_after_a_failed_pass() -> None:
    agent = Agent()
    check = WriterCheck(client(agent), "vm/gw", 2.0)
    check.pass_ttl()  # the first call registers, and passes
    assert agent.sent == ["PUT /v1/agent/service/register", PASS]
    check.pass_ttl()
    assert agent.registrations() == 1
    agent.script = timeout_on("/check/pass/")
    with pytest.raises(CatalogError):
        check.pass_ttl()
    agent.script = lambda method, path: None
    check.pass_ttl()
    assert agent.registrations() == 2  # registered, not only passed
    # and passed after it: the agent keeps a known check's critical status over a registration
    assert agent.sent[-2:] == ["PUT /v1/agent/service/register", PASS]
    check.pass_ttl()
    assert agent.registrations() == 2 and agent.sent[-1].startswith("PUT /v1/agent/check/pass/")


def test_a_session_refused_for_a_critical_check_registers_the_check_again() -> None:
    agent = Agent()
    refusal = "Check 'service:dirac-sidecar-cs-writer-vm-gw' is in critical state"
    critical = Reply(500, None, refusal)

    def script(method: str, path: str) -> Reply | None:
        return critical if path == "/v1/session/create" else None

    agent.script = script
    lock = CSLock(client(agent), "k", "vm/gw", ttl=15.0, lock_delay=1.0, check_ttl=2.0)
    with pytest.raises(CSError, match="critical state"):
        lock.try_acquire()
    assert agent.registrations() == 1
    agent.script = lambda method, path: None
    lock.try_acquire()
    assert agent.registrations() == 2  # the refusal made the next pass a registration
    again = agent.sent.index("PUT /v1/agent/service/register", 1)
    assert agent.sent[again + 1] == PASS
    assert "PUT /v1/session/create" in agent.sent[again:]


def test_gateway_registration_is_sent_again_after_a_failed_heartbeat() -> None:
    agent = Agent()
    registry = GatewayRegistry(client(agent), ("gw.example.org",))
    registry.pass_ttl("g1", 5)
    registry.pass_ttl("g1", 5)
    assert agent.registrations() == 1
    agent.script = timeout_on("/check/pass/")
    with pytest.raises(CatalogError):
        registry.pass_ttl("g1", 5)
    agent.script = lambda method, path: None
    registry.pass_ttl("g1", 5)  # same metadata, within REPUBLISH: registered all the same
    assert agent.registrations() == 2
    registry.fail_ttl("not ready")
    assert agent.registrations() == 2

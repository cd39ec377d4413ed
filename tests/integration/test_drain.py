"""``sidecar drain`` / ``undrain`` with real processes (issue 15): two gateways on one Consul
agent, both CS writers candidates over one CS file, a DIRAC-like call held open by its backend.

One test walks the whole maintenance procedure (a gateway per step would cost ~3 s each): the
long call finishes during the drain, the drained gateway leaves Consul's passing instances and
the CS URL lists while the second gateway keeps serving and writes them, new connections are
accepted during the grace and refused after it, ``check`` says drained (exit 0), ``drain``
exits 0 once the call has ended, the state survives a daemon restart, ``undrain`` reverses it.
"""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gatewaylib import Gateway, sidecar_command, unique_prefix
from helpers import REPO_ROOT, wait_until

from devkit.backend import BackendServer
from devkit.client import CallError
from devkit.consul_agent import ConsulAgent, health
from devkit.pki import DevPKI

pytestmark = pytest.mark.integration
SERVICE = "Framework/GwAlpha"
SECOND_NAME = "dirac-gw2.test"
GRACE = 6.0  # long enough to see a call accepted in it, short enough for the suite


def cs_section(lock_key: str, cs_file: Path) -> str:
    return (
        f'\n[dirac_cs]\nenabled = true\nfile = "{cs_file}"\ndiscover_gateways = true\n'
        f'lock_key = "{lock_key}"\nlock_ttl = "10s"\nlock_delay = "1s"\n'
        f'\n[drain]\ngrace = "{GRACE}s"\ndeadline = "90s"\n'
    )


@pytest.fixture
def fleet(
    gateway_unstarted: Gateway, consul_agent: ConsulAgent, pki: DevPKI, tmp_path: Path
) -> Iterator[tuple[Gateway, Gateway, Path]]:
    """Gateway A (the fixture's) and B (its own names and ports), one CS file and lock."""
    cs_file = tmp_path / "dirac.cfg"
    cs_file.write_text("Systems\n{\n  Framework\n  {\n    URLs\n    {\n    }\n  }\n}\n")
    extra = cs_section(f"dirac-sidecar/test/{uuid.uuid4().hex}/lock", cs_file)
    a = gateway_unstarted
    second = tmp_path / "second"
    second.mkdir()
    b = Gateway(second, consul_agent, pki, prefix=unique_prefix())
    b.names = (SECOND_NAME,)
    for gw in (a, b):
        gw.write_config(gw.config_text() + extra)
    try:
        yield a.start(), b.start(), cs_file
    finally:
        leaks = b.teardown()
        assert not leaks, leaks


def cs_hosts(cs_file: Path) -> set[str]:
    """The hosts in the GwAlpha URL list of the CS file (``=`` then ``+=`` lines)."""
    hosts: set[str] = set()
    for line in cs_file.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip().rstrip("+").strip() == "GwAlpha":
            for url in value.split(","):
                if "://" in url:
                    hosts.add(url.split("://", 1)[1].split(":", 1)[0])
    return hosts


def passing_names(agent: ConsulAgent) -> set[str]:
    names: set[str] = set()
    for entry in health(agent.http_addr, "dirac-gateway", passing=True):
        names.update((entry["Service"]["Meta"].get("gateway_names") or "").split(","))
    return names - {""}


def drain_phase(gw: Gateway) -> str:
    return str((gw.status().get("drain") or {}).get("phase", ""))


def sidecar(gw: Gateway, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*sidecar_command(), "--config", str(gw.config_path), *args],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout, check=False,
    )  # fmt: skip


def refused(gw: Gateway, port: int) -> bool:
    try:
        gw.call(port, timeout=2.0)
    except CallError as exc:
        return "refused" in str(exc).lower()
    return False


def test_drain_restart_undrain(
    fleet: tuple[Gateway, Gateway, Path], backend_factory: Any, consul_agent: ConsulAgent
) -> None:
    a, b, cs_file = fleet
    backend: BackendServer = backend_factory(host="backend1", name=SERVICE)
    a.register_backend("alpha", backend, "i1", dirac=SERVICE)
    port_a, port_b = a.ports[SERVICE], b.ports[SERVICE]
    answerer = f"127.0.0.1:{backend.port}"
    a.wait_routed(port_a, answerer)
    b.wait_routed(port_b, answerer)
    wait_until(lambda: {"dirac-gw.test", SECOND_NAME} <= cs_hosts(cs_file), 30, 0.2,
               "both gateways in the CS")  # fmt: skip

    # A long call through A, held open by its backend until the test releases it.
    gate = backend.hold_next()
    answers: list[dict[str, Any] | BaseException] = []

    def long_call() -> None:
        try:
            answers.append(a.call(port_a, timeout=90))
        except BaseException as exc:  # reported by the main thread
            answers.append(exc)

    accepted = backend.accepted
    caller = threading.Thread(target=long_call, daemon=True)
    caller.start()
    wait_until(lambda: backend.accepted > accepted, 10, 0.02, "the long call at the backend")

    out = (a.tmp / "drain.out").open("w")
    drain = subprocess.Popen(
        [*sidecar_command(), "--config", str(a.config_path), "drain", "--interval", "0.5"],
        stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, text=True,
    )  # fmt: skip
    try:
        # The grace: out of Consul's passing instances, new connections still served.
        wait_until(lambda: drain_phase(a) == "grace", 10, 0.05, "the daemon in grace")
        assert a.try_call(port_a, timeout=2.0) is not None, "a new call during the grace"
        wait_until(lambda: "dirac-gw.test" not in passing_names(consul_agent), 10, 0.1,
                   "A out of Consul's passing instances")  # fmt: skip
        assert SECOND_NAME in passing_names(consul_agent)
        # The CS: B (the writer now: A released the lock) lists only itself.
        wait_until(lambda: cs_hosts(cs_file) == {SECOND_NAME}, 30, 0.2, "A out of the CS")

        # After the grace: A refuses new connections, B serves, the call is still open.
        wait_until(lambda: drain_phase(a) == "closed", GRACE + 10, 0.1, "the grace to end")
        wait_until(lambda: refused(a, port_a), 10, 0.1, "A refusing new connections")
        assert b.call(port_b)["instance"] == answerer
        assert caller.is_alive() and drain.poll() is None
        check = sidecar(a, "check", "--no-consul")
        assert check.returncode == 0, check.stdout + check.stderr
        assert "drained" in check.stdout
        wait_until(lambda: "1 connections left" in (a.tmp / "drain.out").read_text(), 10, 0.1,
                   "the drain counting the long call")  # fmt: skip

        gate.set()  # the call ends by itself...
        caller.join(30)
        assert answers and isinstance(answers[0], dict), answers
        assert drain.wait(30) == 0  # ...and the drain is over
    finally:
        gate.set()
        if drain.poll() is None:
            drain.kill()
            drain.wait(10)
        out.close()
    text = (a.tmp / "drain.out").read_text()
    assert "drained: no connection left" in text, text

    # A restarted daemon stays drained: maintenance again, frontends paused again.
    a.stop_daemon()
    a.start()
    wait_until(lambda: drain_phase(a) == "closed" and a.status()["drain"]["maintenance"], 15,
               0.1, "the restarted daemon drained")  # fmt: skip
    wait_until(lambda: refused(a, port_a), 10, 0.1, "A refusing after the restart")
    assert "dirac-gw.test" not in passing_names(consul_agent)
    assert cs_hosts(cs_file) == {SECOND_NAME}

    undrain = sidecar(a, "undrain")
    assert undrain.returncode == 0, undrain.stdout + undrain.stderr
    a.wait_routed(port_a, answerer)
    wait_until(lambda: "dirac-gw.test" in passing_names(consul_agent), 10, 0.1, "A passing")
    wait_until(lambda: {"dirac-gw.test", SECOND_NAME} <= cs_hosts(cs_file), 30, 0.2,
               "A back in the CS")  # fmt: skip
    assert sidecar(a, "check", "--no-consul").returncode in (0, 1)

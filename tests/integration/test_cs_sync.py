"""CS sync end to end on a real Consul agent: ``sidecar cs diff`` / ``cs sync`` exit codes,
nothing written from stale data, by a non-holder, or when Consul is unreachable, and the
gateway registry's live names."""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import free_port, wait_until

from devkit.consul_agent import ConsulAgent, deregister, health, register
from sidecar.cli import main
from sidecar.config.cs import CSSettings
from sidecar.config.schema import ConsulSettings, GatewaySettings, Settings
from sidecar.consul.client import ConsulClient
from sidecar.core.model import Backend, DesiredState, Protocol
from sidecar.dirac_cs.writer import CSWriter, CSWriteStatus
from sidecar.fleet.lock import CSLock
from sidecar.fleet.member import Beat, FleetMember
from sidecar.fleet.registry import GatewayRegistry
from sidecar.fleet.view import fleet, lagging, live_gateway_names

DATA = Path(__file__).resolve().parents[1] / "data" / "cs"
ALLOWED = (".test",)  # the gateway names these tests register
GW = ("dirac-gw1.example.org", "dirac-gw2.example.org")
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SYSADMIN = {"dirac_system": "Framework", "dirac_service": "SystemAdministrator"}
DESIRED = DesiredState((Backend("Framework", "SystemAdministrator", Protocol.DIPS, 9162, ()),))


def client(address: str) -> ConsulClient:
    return ConsulClient(ConsulSettings(address=address, timeout=2.0), "")


def state(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


@pytest.fixture
def cs_file(tmp_path: Path) -> Path:
    target = tmp_path / "dirac.cfg"
    shutil.copyfile(DATA / "dirac-v9.cfg", target)
    return target


@pytest.fixture
def lock_key() -> str:
    return f"dirac-sidecar/test/{uuid.uuid4().hex}/lock"


@pytest.fixture
def sysadmin(consul_agent: ConsulAgent) -> Iterator[str]:
    """One passing SystemAdministrator instance tagged ``dirac``."""
    name, sid = "dirac-sysadmin", f"sysadmin-{uuid.uuid4().hex[:8]}"
    register(consul_agent.http_addr, name, sid, "127.0.0.1", 31000, SYSADMIN)
    wait_until(lambda: health(consul_agent.http_addr, name, passing=True), 10)
    yield sid
    deregister(consul_agent.http_addr, sid)


def config(tmp_path: Path, address: str, cs_file: Path, lock_key: str) -> str:
    path = tmp_path / "sidecar.toml"
    path.write_text(
        f'[consul]\naddress = "{address}"\ntimeout = 2.0\n'
        f"[gateway]\nnames = {list(GW)!r}\n".replace("'", '"')
        + 'backend_networks = ["127.0.0.0/8"]\n'
        + f'[haproxy]\nruntime_dir = "{tmp_path / "run"}"\n'
        f'[dirac_cs]\nenabled = true\nfile = "{cs_file}"\nlock_key = "{lock_key}"\n'
        'lock_ttl = "10s"\nlock_delay = "1s"\n'
    )
    return str(path)


def run(cfg: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--config", cfg, *args])
    return result.exit_code, result.stdout, result.stderr


def test_cs_diff_then_sync_then_nothing(
    consul_agent: ConsulAgent, sysadmin: str, cs_file: Path, lock_key: str, tmp_path: Path
) -> None:
    cfg = config(tmp_path, consul_agent.http_addr, cs_file, lock_key)
    original = state(cs_file)
    code, out, err = run(cfg, "cs", "diff")
    assert code == 1, err
    assert "-      SystemAdministrator = dips://dirac-01.example.org:9162" in out
    assert "+      SystemAdministrator = dips://dirac-gw1.example.org:9162" in out
    assert state(cs_file) == original  # diff writes nothing

    code, out, err = run(cfg, "cs", "sync")
    assert code == 1, err
    assert out.startswith("/Systems/Framework/URLs/SystemAdministrator: ")
    written = state(cs_file)
    assert written != original

    assert run(cfg, "cs", "diff")[:2] == (0, "")
    assert run(cfg, "cs", "sync")[:2] == (0, "")
    assert state(cs_file) == written  # a second sync writes nothing: bytes and mtime
    assert CSLock(client(consul_agent.http_addr), lock_key, "").holder() == ""  # released


def test_cs_sync_refused_while_another_gateway_holds_the_lock(
    consul_agent: ConsulAgent, sysadmin: str, cs_file: Path, lock_key: str, tmp_path: Path
) -> None:
    cfg = config(tmp_path, consul_agent.http_addr, cs_file, lock_key)
    daemon = CSLock(client(consul_agent.http_addr), lock_key, "node-x/gw-x", 10.0, 1.0)
    try:
        assert daemon.try_acquire()
        before = state(cs_file)
        code, _, err = run(cfg, "cs", "sync")
        assert code == 2 and "held by node-x/gw-x" in err
        assert state(cs_file) == before
    finally:
        daemon.release()


def test_consul_unreachable_exits_2_and_leaves_the_file(
    cs_file: Path, lock_key: str, tmp_path: Path
) -> None:
    cfg = config(tmp_path, f"http://127.0.0.1:{free_port()}", cs_file, lock_key)
    before = state(cs_file)
    for command in ("diff", "sync"):
        code, out, err = run(cfg, "cs", command)
        assert code == 2 and out == "" and "error:" in err, (command, err)
    assert state(cs_file) == before


def test_writer_needs_fresh_data_and_the_lock(
    consul_agent: ConsulAgent, cs_file: Path, lock_key: str
) -> None:
    settings = CSSettings(enabled=True, file=str(cs_file))
    a = CSLock(client(consul_agent.http_addr), lock_key, "node-a/gw-a", 10.0, 1.0)
    b = CSLock(client(consul_agent.http_addr), lock_key, "node-b/gw-b", 10.0, 1.0)
    try:
        assert a.tick() and not b.tick()
        writer_a, writer_b = CSWriter(settings, a, lambda: GW), CSWriter(settings, b, lambda: GW)
        before = state(cs_file)
        assert writer_a.sync(DESIRED, False, NOW).status is CSWriteStatus.NOT_FRESH
        assert writer_b.sync(DESIRED, True, NOW).status is CSWriteStatus.NOT_HOLDER
        assert state(cs_file) == before  # bytes and mtime unchanged
        assert writer_a.sync(DESIRED, True, NOW).status is CSWriteStatus.WRITTEN
        assert writer_a.sync(DESIRED, True, NOW).status is CSWriteStatus.UNCHANGED
    finally:
        a.release()
        b.release()


def test_only_ready_gateways_are_live(consul_agent: ConsulAgent) -> None:
    consul = client(consul_agent.http_addr)
    one = GatewayRegistry(consul, ("gw-one.test", "gw-one-alias.test"))
    two = GatewayRegistry(consul, ("gw-two.test",))
    try:
        one.pass_ttl("gen-a", 40)
        two.fail_ttl("haproxy not running")
        assert one.service_id == "dirac-gateway-gw-one.test"
        live = wait_until(lambda: live_gateway_names(consul, ALLOWED)[0], 10)
        assert live == ("gw-one-alias.test", "gw-one.test")
        infos = {info.name: info for info in fleet(consul)}
        assert infos["gw-one.test"].status == "passing"
        assert infos["gw-one.test"].generation == "gen-a"
        assert infos["gw-one.test"].catalog_index == 40
        assert infos["gw-two.test"].status == "critical"
        assert lagging(infos.values()) == ("gw-two.test",)

        two.pass_ttl("gen-a", 40)  # ready now: advertised
        wait_until(lambda: len(live_gateway_names(consul, ALLOWED)[0]) == 3, 10)
        one.pass_ttl("gen-a", 41)  # republished meta, and still passing
        assert wait_until(lambda: lagging(fleet(consul)) == ("gw-two.test",), 10)
        assert len(live_gateway_names(consul, ALLOWED)[0]) == 3
    finally:
        one.deregister()
        two.deregister()
    assert live_gateway_names(consul, ALLOWED)[0] == ()


def test_status_fleet(
    consul_agent: ConsulAgent, cs_file: Path, lock_key: str, tmp_path: Path
) -> None:
    cfg = config(tmp_path, consul_agent.http_addr, cs_file, lock_key)
    consul = client(consul_agent.http_addr)
    gateways = [GatewayRegistry(consul, (f"gw-{n}.test",), republish=0.0) for n in "abc"]
    try:
        for gw in gateways:
            gw.pass_ttl("gen-1", 7)
        code, out, err = run(cfg, "status", "--fleet")
        assert code == 0, out + err
        assert out.count("passing") == 3 and "LAGGING" not in out
        gateways[2].pass_ttl("gen-0", 6)
        code, out, _ = run(cfg, "status", "--fleet")
        assert code == 1
        assert [line.split()[0] for line in out.splitlines() if "LAGGING" in line] == ["gw-c.test"]
    finally:
        for gw in gateways:
            gw.deregister()


def test_a_registration_the_agent_lost_comes_back(consul_agent: ConsulAgent) -> None:
    consul = client(consul_agent.http_addr)
    gw = GatewayRegistry(consul, ("gw-lost.test",))
    try:
        gw.pass_ttl("gen-1", 3)
        deregister(consul_agent.http_addr, gw.service_id)  # e.g. the agent restarted without it
        wait_until(lambda: live_gateway_names(consul, ALLOWED)[0] == (), 10)
        gw.pass_ttl("gen-1", 3)
        assert wait_until(lambda: live_gateway_names(consul, ALLOWED)[0], 10) == ("gw-lost.test",)
    finally:
        gw.deregister()


def member_settings(cs_file: Path, lock_key: str, name: str, address: str) -> Settings:
    return Settings(
        consul=ConsulSettings(address=address, timeout=2.0),
        gateway=GatewaySettings(names=(name,)),
        dirac_cs=CSSettings(enabled=True, file=str(cs_file), lock_key=lock_key, lock_delay=0.0),
    )


def test_fleet_members_one_writer_then_handover(
    consul_agent: ConsulAgent, tmp_path: Path, lock_key: str
) -> None:
    files = []
    for n in ("a", "b"):
        (tmp_path / n).mkdir()
        files.append(tmp_path / n / "dirac.cfg")
        shutil.copyfile(DATA / "dirac-v9.cfg", files[-1])
    addr = consul_agent.http_addr
    a = FleetMember(
        member_settings(files[0], lock_key, "gw-a.test", addr), client(addr), "n/a", 0.0
    )
    b = FleetMember(
        member_settings(files[1], lock_key, "gw-b.test", addr), client(addr), "n/b", 0.0
    )
    beat = Beat(True, DESIRED, "gen-1", 12, True, NOW)
    try:
        out_a = a.heartbeat(beat)
        assert out_a is not None and out_a.status is CSWriteStatus.WRITTEN
        before_b = state(files[1])
        out_b = b.heartbeat(beat)
        assert out_b is not None and out_b.status is CSWriteStatus.NOT_HOLDER
        assert state(files[1]) == before_b
        assert wait_until(lambda: live_gateway_names(client(addr), ALLOWED)[0], 10) == (
            "gw-a.test",
            "gw-b.test",
        )

        assert a.heartbeat(dataclasses.replace(beat, ready=False, reason="haproxy down")) is None
        assert a.lock is not None and a.lock.session is None  # released: b writes at once
        assert wait_until(
            lambda: live_gateway_names(client(addr), ALLOWED)[0] == ("gw-b.test",), 10
        )
        # b's lock keeper takes the lock over and writes at once, without a heartbeat
        wait_until(lambda: state(files[1]) != before_b, 10, 0.05, "b writes")
        # the keeper records its outcome once the write has returned: a moment after the file
        wait_until(lambda: b.last_outcome is not None and b.last_outcome.status is
                   CSWriteStatus.WRITTEN, 10, 0.05, "b's outcome")  # fmt: skip
    finally:
        a.stop()
        b.stop()
    assert live_gateway_names(client(addr), ALLOWED)[0] == ()
    assert CSLock(client(addr), lock_key, "").holder() == ""

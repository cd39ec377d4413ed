"""``sidecar register`` against a real Consul agent and real TLS backends.

The sample backends speak TLS but not DISET, so these tests use ``--check tls`` (the DISET
ping check is exercised against real DIRAC in ``test_dirac_e2e.py``). A v9 and a v8 DIRAC cfg
are registered with the right metadata and published ports (flags and Marathon-style
``PORT_<n>`` environment); the TTL check fed by the register process passes while a TLS backend
listens on the service's port and goes critical (with the error as output) when it stops, or
when the server's certificate is not trusted; SIGTERM and SIGINT deregister; a bad cfg
registers nothing and exits 2 naming the file and the option; an unreachable agent exits 1.
"""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import wait_until
from registerlib import RegisterProcess, agent_services, check_status, write_settings

from devkit.backend import BackendServer
from devkit.backendproc import BackendProcess
from devkit.consul_agent import ConsulAgent, health
from devkit.pki import DevCA, DevPKI

_unique = itertools.count(1)
WAIT = 20.0


def unique(prefix: str) -> str:
    return f"{prefix}{next(_unique)}x{os.getpid()}"


def security(pki: DevPKI, host: str = "backend3") -> str:
    return (
        "DIRAC\n{\n  Security\n  {\n"
        f"    CertFile = {pki.host_cert(host)}\n    KeyFile = {pki.host_key(host)}\n"
        f"    CALocation = {pki.ca_dir}\n  }}\n}}\n"
    )


def v9_cfg(pki: DevPKI, system: str, services: dict[str, dict[str, str]]) -> str:
    body = "".join(
        f"      {name}\n      {{\n"
        + "".join(f"        {k} = {v}\n" for k, v in opts.items())
        + "      }\n"
        for name, opts in services.items()
    )
    return (
        security(pki)
        + f"Systems\n{{\n  {system}\n  {{\n    Services\n    {{\n{body}    }}\n  }}\n}}\n"
    )


def v8_cfg(pki: DevPKI, system: str, service: str, port: int) -> str:
    head = security(pki).rstrip().removesuffix("}")  # reopen /DIRAC to add the setup
    return (
        head + f"  Setup = Prod\n  Setups\n  {{\n    Prod\n    {{\n      {system} = Production\n"
        "    }\n  }\n}\n"
        f"Systems\n{{\n  {system}\n  {{\n    Production\n    {{\n      Services\n      {{\n"
        f"        {service}\n        {{\n          Port = {port}\n        }}\n"
        "      }\n    }\n    Certification\n    {\n      Services\n      {\n"
        "        Ignored\n        {\n          Port = 1\n        }\n      }\n    }\n  }\n}\n"
    )


Runner = Callable[..., RegisterProcess]
Factory = Callable[..., BackendServer | BackendProcess]


@pytest.fixture
def register(consul_agent: ConsulAgent, tmp_path: Path) -> Iterator[Runner]:
    """``register(cfg_text, *args, env=None)`` starts ``sidecar register`` (stopped by PID)."""
    started: list[RegisterProcess] = []
    settings = write_settings(tmp_path / "sidecar.toml", consul_agent.http_addr)

    def start(
        cfg: str, *args: str, env: dict[str, str] | None = None, run: bool = False
    ) -> RegisterProcess:
        n = len(started)
        cfg_path = tmp_path / f"dirac-{n}.cfg"
        cfg_path.write_text(cfg)
        env = {"DIRACSYSCONFIG": str(cfg_path), **(env or {})}
        extra = ["--interval", "1", "--instance", "test", "--check", "tls", *args]
        proc = RegisterProcess(settings, extra, tmp_path / f"register-{n}.log", env)
        started.append(proc)
        return proc if run else proc.start()

    yield start
    for proc in started:
        if proc.stop(signal.SIGKILL if not proc.alive() else signal.SIGTERM) not in (0, None):
            print(f"--- register log ---\n{proc.output()}")


def by_name(agent: ConsulAgent, name: str) -> list[dict[str, object]]:
    return [s for s in agent_services(agent.http_addr).values() if s["Service"] == name]


def test_v9_registers_meta_ports_and_tls_check(
    consul_agent: ConsulAgent, backend_factory: Factory, pki: DevPKI, register: Runner
) -> None:
    addr = consul_agent.http_addr
    system = unique("RegNine")
    dips = backend_factory(process=True, name=f"{system}/Alpha")
    https = backend_factory(host="backend2", name=f"{system}/TornadoBeta")
    cfg = v9_cfg(
        pki,
        system,
        {
            "Alpha": {"Port": str(dips.port)},
            "TornadoBeta": {"Protocol": "https", "Port": str(https.port)},
        },
    )
    proc = register(
        cfg, "--port-map", f"{dips.port}=31742", "--dirac-port", f"{system}/TornadoBeta=28443"
    )
    alpha, beta = f"dirac-{system.lower()}-alpha", f"dirac-{system.lower()}-tornadobeta"
    wait_until(lambda: by_name(consul_agent, alpha) and by_name(consul_agent, beta), WAIT, 0.1,
               "both services registered")  # fmt: skip
    [a] = by_name(consul_agent, alpha)
    [b] = by_name(consul_agent, beta)
    assert a["Tags"] == ["dirac"] and a["Port"] == 31742 and a["Address"] == ""
    assert a["Meta"] == {"dirac_system": system, "dirac_service": "Alpha", "dirac_protocol": "dips"}
    assert a["ID"] == f"{alpha}-test-31742"
    assert b["Port"] == https.port  # not mapped: published as is
    assert b["Meta"] == {
        "dirac_system": system,
        "dirac_service": "TornadoBeta",
        "dirac_protocol": "https",
        "dirac_port": "28443",
    }
    check_a, check_b = f"{a['ID']}:tls", f"{b['ID']}:tls"
    wait_until(lambda: check_status(addr, check_a)[0] == "passing", WAIT, 0.1, "alpha passing")
    wait_until(lambda: check_status(addr, check_b)[0] == "passing", WAIT, 0.1, "beta passing")
    assert "TLS handshake OK" in check_status(addr, check_a)[1]
    assert [e["Service"]["ID"] for e in health(addr, alpha, passing=True)] == [a["ID"]]

    dips.stop()  # the service dies: its check goes critical
    wait_until(lambda: check_status(addr, check_a)[0] == "critical", WAIT, 0.1, "alpha critical")
    assert "refused" in check_status(addr, check_a)[1].lower()
    assert check_status(addr, check_b)[0] == "passing"
    assert health(addr, alpha, passing=True) == []

    assert proc.stop(signal.SIGTERM) == 0, proc.output()
    assert by_name(consul_agent, alpha) == [] and by_name(consul_agent, beta) == []
    assert check_status(addr, check_a)[0] == "absent"
    assert "deregistered" in proc.output()


def test_v8_with_marathon_port_environment_and_sigint(
    consul_agent: ConsulAgent, backend_factory: Factory, pki: DevPKI, register: Runner
) -> None:
    system = unique("RegEight")
    backend = backend_factory(name=f"{system}/Gamma")
    port = backend.port
    proc = register(v8_cfg(pki, system, "Gamma", port), env={f"PORT_{port}": "31999"})
    name = f"dirac-{system.lower()}-gamma"
    wait_until(lambda: by_name(consul_agent, name), WAIT, 0.1, "gamma registered")
    [entry] = by_name(consul_agent, name)
    assert entry["Port"] == 31999
    assert entry["Meta"] == {"dirac_system": system, "dirac_service": "Gamma",
                             "dirac_protocol": "dips"}  # fmt: skip
    assert not [s for s in agent_services(consul_agent.http_addr).values()
                if s["Meta"].get("dirac_service") == "Ignored"]  # fmt: skip
    check = f"{entry['ID']}:tls"
    wait_until(lambda: check_status(consul_agent.http_addr, check)[0] == "passing", WAIT, 0.1,
               "gamma passing")  # fmt: skip
    assert proc.stop(signal.SIGINT) == 0, proc.output()
    assert by_name(consul_agent, name) == []


def test_untrusted_server_certificate_is_critical(
    consul_agent: ConsulAgent,
    backend_factory: Factory,
    pki: DevPKI,
    register: Runner,
    tmp_path: Path,
) -> None:
    other = DevCA.load_or_create(tmp_path / "other-ca")
    stranger = other.issue_host("stranger", ["localhost", "127.0.0.1"])
    system = unique("RegBad")
    backend = backend_factory(name=f"{system}/Delta", cert=stranger.cert, key=stranger.key)
    cfg = v9_cfg(pki, system, {"Delta": {"Port": str(backend.port)}})
    proc = register(cfg)
    name = f"dirac-{system.lower()}-delta"
    wait_until(lambda: by_name(consul_agent, name), WAIT, 0.1, "delta registered")
    check = f"{by_name(consul_agent, name)[0]['ID']}:tls"

    def critical_with_note() -> bool:
        status, output = check_status(consul_agent.http_addr, check)
        return status == "critical" and "certificate" in output

    wait_until(critical_with_note, WAIT, 0.2, "delta critical with a certificate error")
    assert "server certificate rejected" in check_status(consul_agent.http_addr, check)[1]
    assert proc.stop() == 0


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ("Systems\n{\n  Framework\n  {\n", "not a valid DIRAC cfg"),
        ("DIRAC\n{\n  Setup = X\n}\n", "/DIRAC/Setups/X: v8 layout: setup not defined"),
        ("Systems\n{\n  Web\n  {\n    Port = 8080\n  }\n}\n", "/Systems: unknown layout"),
        ("SYSTEM", "/Systems/{system}/Services/Foo/Port: port 'nine' is not a port number"),
    ],
)
def test_bad_config_registers_nothing(
    consul_agent: ConsulAgent, pki: DevPKI, register: Runner, cfg: str, message: str
) -> None:
    system = unique("RegWrong")
    if cfg == "SYSTEM":
        cfg = v9_cfg(pki, system, {"Ok": {"Port": "9999"}, "Foo": {"Port": "nine"}})
    before = set(agent_services(consul_agent.http_addr))
    result = register(cfg, run=True).run()
    assert result.returncode == 2, result
    assert "dirac-0.cfg" in result.stderr
    assert message.format(system=system) in result.stderr
    assert "nothing registered" in result.stderr
    assert set(agent_services(consul_agent.http_addr)) == before


def test_unknown_service_filter_and_dry_run(
    consul_agent: ConsulAgent, pki: DevPKI, register: Runner
) -> None:
    system = unique("RegDry")
    cfg = v9_cfg(pki, system, {"Eps": {"Port": "9170"}, "Zeta": {"Port": "9171"}})
    bad = register(cfg, "--service", f"{system}/Nope", run=True).run()
    assert (
        bad.returncode == 2 and f"--service: not in the DIRAC config: {system}/Nope" in bad.stderr
    )
    dry = register(cfg, "--service", f"{system}/Zeta", "--port-map", "9171=30171", "--dry-run",
                   run=True).run()  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert f"dirac-{system.lower()}-zeta-test-30171" in dry.stdout
    assert "Eps" not in dry.stdout
    assert not [s for s in agent_services(consul_agent.http_addr).values()
                if s["Meta"].get("dirac_system") == system]  # fmt: skip


def test_unreachable_agent_exits_1_after_retrying(pki: DevPKI, tmp_path: Path) -> None:
    from helpers import free_port

    settings = write_settings(tmp_path / "dead.toml", f"http://127.0.0.1:{free_port()}")
    cfg = tmp_path / "dirac.cfg"
    cfg.write_text(v9_cfg(pki, unique("RegDead"), {"Eta": {"Port": "9172"}}))
    proc = RegisterProcess(settings, ["--retry-for", "2"], tmp_path / "register.log",
                           {"DIRACSYSCONFIG": str(cfg)})  # fmt: skip
    result = proc.run(timeout=30)
    assert result.returncode == 1, result
    assert "retrying in 1 s" in result.stderr
    assert "error: register dirac-regdead" in result.stderr


def test_diset_ping_check_fails_on_a_service_that_is_not_diset(
    consul_agent: ConsulAgent, backend_factory: Factory, pki: DevPKI, register: Runner
) -> None:
    system = unique("RegPing")
    backend = backend_factory(name=f"{system}/Theta")  # TLS, but answers a JSON line, not DISET
    cfg = v9_cfg(pki, system, {"Theta": {"Port": str(backend.port)}})
    proc = register(cfg, "--check", "ping")  # the last --check wins
    name = f"dirac-{system.lower()}-theta"
    wait_until(lambda: by_name(consul_agent, name), WAIT, 0.1, "theta registered")
    check = f"{by_name(consul_agent, name)[0]['ID']}:tls"

    def critical() -> str:
        status, output = check_status(consul_agent.http_addr, check)
        return output if status == "critical" and "DISET" in output else ""

    assert "not a DISET answer" in wait_until(critical, WAIT, 0.2, "theta critical")
    assert proc.stop() == 0

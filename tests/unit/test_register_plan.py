"""The pure part of ``sidecar register``: DIRAC cfg -> services -> Consul registrations."""

from __future__ import annotations

import pytest

from sidecar.base.errors import ConfigError
from sidecar.register.localcfg import LocalService, find_services, parse_dirac_cfg, select
from sidecar.register.plan import (
    consul_name,
    credential_candidates,
    plan,
    port_mapping,
    public_ports,
)

V9 = """
DIRAC
{
  Security
  {
    CertFile = /etc/dirac/hostcert.pem
    KeyFile = /etc/dirac/hostkey.pem
    CALocation = /etc/dirac/cas
  }
}
Systems
{
  Framework
  {
    Services
    {
      SystemAdministrator
      {
        Port = 9162
      }
      TornadoTokenManager
      {
        Protocol = https
      }
    }
    URLs
    {
      SystemAdministrator = dips://old:9162/Framework/SystemAdministrator
    }
  }
  WorkloadManagement
  {
    Services
    {
      JobMonitoring
      {
        Port = 9130
        Protocol = dips
      }
      TornadoJobStateUpdate
      {
        Protocol = HTTPS
        Port = 8444
      }
    }
  }
  Tornado
  {
    Port = 8443
  }
}
"""

V8 = """
DIRAC
{
  Setup = Production
  Setups
  {
    Production
    {
      Framework = Prod
      Tornado = Prod
    }
  }
}
Systems
{
  Framework
  {
    Prod
    {
      Services
      {
        SystemAdministrator
        {
          Port = 9162
        }
        TornadoX
        {
          Protocol = https
        }
      }
    }
    Certification
    {
      Services
      {
        Other
        {
          Port = 9999
        }
      }
    }
  }
  Tornado
  {
    Prod
    {
      Port = 8500
    }
  }
}
"""


def one_service(name: str, *options: str) -> str:
    """A v9 cfg with one Framework service holding ``options``."""
    body = "".join(f"    {line}\n" for line in options)
    head = f"Systems\n{{\n Framework\n {{\n  Services\n  {{\n   {name}\n   {{\n"
    return head + body + "   }\n  }\n }\n}\n"


def services(text: str, **kwargs: str) -> tuple[LocalService, ...]:
    return find_services(parse_dirac_cfg([("dirac.cfg", text)]), **kwargs)


def test_v9_services_ports_and_protocols() -> None:
    found = {s.path: (s.protocol, s.port) for s in services(V9)}
    assert found == {
        "Framework/SystemAdministrator": ("dips", 9162),
        "Framework/TornadoTokenManager": ("https", 8443),  # the Tornado server's port
        "WorkloadManagement/JobMonitoring": ("dips", 9130),
        "WorkloadManagement/TornadoJobStateUpdate": ("https", 8444),  # its own Port wins
    }


def test_v8_uses_the_setup_instance_only() -> None:
    found = {s.path: (s.protocol, s.port, s.section) for s in services(V8)}
    assert found == {
        "Framework/SystemAdministrator": (
            "dips",
            9162,
            "/Systems/Framework/Prod/Services/SystemAdministrator",
        ),
        "Framework/TornadoX": ("https", 8500, "/Systems/Framework/Prod/Services/TornadoX"),
    }


def test_v8_setup_option_overrides_the_file() -> None:
    text = V8.replace("Framework = Prod", "Framework = Certification").replace(
        "Setups\n  {\n", "Setups\n  {\n    Cert\n    {\n      Framework = Certification\n    }\n"
    )
    found = {s.path for s in services(text, setup="Cert")}
    assert found == {"Framework/Other"}


def test_forced_v8_layout_without_setup_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"/DIRAC/Setup.*no setup"):
        services(V9, layout="v8")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("Systems\n{\n  Framework\n  {\n", "dirac.cfg: not a valid DIRAC cfg"),
        ("DIRAC\n{\n  Hostname = x\n}\n", "dirac.cfg: /Systems: unknown layout"),
        (
            "Systems\n{\n Framework\n {\n  Services\n  {\n  }\n }\n}\n",
            "dirac.cfg: /Systems/<System>/Services: no DIRAC service configured",
        ),
        (
            one_service("Foo", "Port = 91x"),
            r"dirac.cfg: /Systems/Framework/Services/Foo/Port: port '91x' is not a port number",
        ),
        (
            one_service("Foo", "Port = 70000"),
            "Foo/Port: port 70000 is out of range",
        ),
        (
            one_service("Foo", "Protocol = dips"),
            "Foo/Port: missing: a dips service needs its Port",
        ),
        (
            one_service("Foo", "Port = 1", "Protocol = dip"),
            "Foo/Protocol: 'dip': the gateway passes only dips and https",
        ),
    ],
)
def test_bad_configs_name_the_file_and_option(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        services(text)


def test_later_files_override_earlier_ones() -> None:
    extra = one_service("SystemAdministrator", "Port = 9999")
    cfg = parse_dirac_cfg([("a.cfg", V9), ("b.cfg", extra)])
    by_path = {s.path: s.port for s in find_services(cfg)}
    assert by_path["Framework/SystemAdministrator"] == 9999
    assert cfg.source == "a.cfg,b.cfg"


def test_select_filters_and_reports_unknown_services() -> None:
    found = services(V9)
    assert [s.path for s in select(found, ["WorkloadManagement/JobMonitoring"], "f")] == [
        "WorkloadManagement/JobMonitoring"
    ]
    assert select(found, [], "f") == found
    with pytest.raises(ConfigError, match="--service: not in the DIRAC config: Foo/Bar"):
        select(found, ["Foo/Bar"], "f")


def test_port_mapping_sources_and_precedence() -> None:
    env = {
        "PORT_9162": "31742",  # Marathon
        "PORT0": "1",  # ignored: not a container port form
        "NOMAD_PORT_sysadmin": "9130",
        "NOMAD_HOST_PORT_sysadmin": "25000",
        "NOMAD_PORT_nohost": "9999",
    }
    assert port_mapping([], env) == {9162: 31742, 9130: 25000}
    assert port_mapping(["9162=40000"], env)[9162] == 40000  # flags win
    with pytest.raises(ConfigError, match="--port-map: 9162=x"):
        port_mapping(["9162=x"], {})
    with pytest.raises(ConfigError, match="environment: PORT_9162"):
        port_mapping([], {"PORT_9162": "abc"})


def test_plan_builds_meta_ports_and_ids() -> None:
    chosen = select(
        services(V9), ["Framework/SystemAdministrator", "Framework/TornadoTokenManager"], "f"
    )
    regs = plan(
        chosen,
        {9162: 31742},
        "10.0.0.5",
        "dirac",
        public_ports(["Framework/TornadoTokenManager=8450"]),
        instance="node7",
    )
    first, second = regs
    assert first.name == consul_name(first.service) == "dirac-framework-systemadministrator"
    assert (first.address, first.port, first.tags) == ("10.0.0.5", 31742, ("dirac",))
    assert dict(first.meta) == {
        "dirac_system": "Framework",
        "dirac_service": "SystemAdministrator",
        "dirac_protocol": "dips",
    }
    assert first.service_id == "dirac-framework-systemadministrator-node7-31742"
    assert second.port == 8443  # unmapped: published as is
    assert dict(second.meta)["dirac_protocol"] == "https"
    assert dict(second.meta)["dirac_port"] == "8450"
    payload = first.payload("30s", "10m")
    assert payload["Check"]["TTL"] == "30s"
    assert payload["Check"]["Status"] == "critical"
    assert payload["Check"]["DeregisterCriticalServiceAfter"] == "10m"
    assert payload["Check"]["CheckID"] == first.check_id
    assert "DeregisterCriticalServiceAfter" not in first.payload("30s", "")["Check"]
    assert "Address" not in plan(chosen, {}, "", "dirac")[0].payload("30s", "")


def test_plan_rejects_bad_inputs() -> None:
    chosen = services(V9)
    with pytest.raises(ConfigError, match="--address"):
        plan(chosen, {}, "not a host!", "dirac")
    with pytest.raises(ConfigError, match="--dirac-port"):
        plan(chosen, {}, "", "dirac", {"Foo/Bar": 1})
    with pytest.raises(ConfigError, match="--dirac-port"):
        public_ports(["Framework=1"])
    two = select(chosen, ["Framework/SystemAdministrator", "WorkloadManagement/JobMonitoring"], "f")
    with pytest.raises(ConfigError, match="JobMonitoring on one port 30000"):
        plan(two, {9162: 30000, 9130: 30000}, "", "dirac", instance="n")


def test_credential_candidates_follow_dirac_order() -> None:
    cfg = parse_dirac_cfg([("dirac.cfg", V9)])
    creds = credential_candidates(cfg, {"DIRAC_X509_HOST_CERT": "/env/cert.pem"}, root="/opt/dirac")
    assert creds.cert[:2] == ("/env/cert.pem", "/etc/dirac/hostcert.pem")
    assert creds.key[0] == "/etc/dirac/hostkey.pem"
    assert "/opt/dirac/etc/grid-security/hostkey.pem" in creds.key
    assert creds.ca_dir[0] == "/etc/dirac/cas"
    assert creds.ca_dir[-1] == "/etc/grid-security/certificates"

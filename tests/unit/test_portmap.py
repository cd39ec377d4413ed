import pytest

from sidecar.core.model import Protocol
from sidecar.core.portmap import hashed_port, parse_port_map
from tests.unit.factories import port_map


def test_shipped_map_has_dirac_defaults_and_distinct_https_ports() -> None:
    pm = port_map()
    sysadmin = pm.lookup("Framework", "SystemAdministrator")
    assert sysadmin is not None and sysadmin.gateway_port == 9162
    assert sysadmin.protocol is Protocol.DIPS
    cs = pm.lookup("Configuration", "Server")
    assert cs is not None and cs.gateway_port == 9135 and cs.protocol is Protocol.HTTPS
    ports = [e.gateway_port for e in pm.entries]
    assert len(ports) == len(set(ports))
    assert 8443 not in ports  # every Tornado service got its own public port
    assert len(pm.entries) == 69  # 71 rows, two LHCbDIRAC redefinitions of the same service


def test_same_service_twice_is_not_a_collision() -> None:
    text = "system,service,protocol,gateway_port\nA,B,dips,9000\nA,B,dips,9000\n"
    assert len(parse_port_map(text, "x").entries) == 1


def test_port_collision_is_an_error_naming_the_row() -> None:
    text = "system,service,protocol,gateway_port\nA,B,dips,9000\nA,C,dips,9000\n"
    with pytest.raises(ValueError, match="x: line 3: gateway_port 9000 already used by A/B"):
        parse_port_map(text, "x")


def test_bad_row_is_reported() -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_port_map("system,service,protocol,gateway_port\nA,B,ftp,9000\n", "x")


def test_hashed_port_is_stable_and_in_range() -> None:
    first = hashed_port("Foo", "Bar", 20000, 29999)
    assert first == hashed_port("Foo", "Bar", 20000, 29999)
    assert 20000 <= first <= 29999
    assert first != hashed_port("Foo", "Baz", 20000, 29999)

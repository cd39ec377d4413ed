import ipaddress

import pytest

from sidecar.base import validate


@pytest.mark.parametrize("value", ["Framework", "SystemAdministrator", "X1_y"])
def test_dirac_names_accepted(value: str) -> None:
    assert validate.dirac_name(value, "system") == value


@pytest.mark.parametrize("value", ["", "1abc", "Frame work", "a\nb", "é", "x" * 65, None, 5, "a-b"])
def test_dirac_names_rejected(value: object) -> None:
    with pytest.raises(ValueError):
        validate.dirac_name(value, "system")


@pytest.mark.parametrize(("value", "expected"), [(1, 1), ("65535", 65535), ("9162", 9162)])
def test_ports_accepted(value: object, expected: int) -> None:
    assert validate.port(value) == expected


@pytest.mark.parametrize(
    "value", [0, 65536, "0", "65536", "-1", "9162 ", "0x10", True, None, 1.5, "", "٣"]
)
def test_ports_rejected(value: object) -> None:
    with pytest.raises(ValueError):
        validate.port(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("::1", "::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("Host-1.Example.org", "host-1.example.org"),
        ("node.", "node"),
    ],
)
def test_hosts_accepted(value: str, expected: str) -> None:
    assert validate.host(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "0.0.0.0",
        "::",
        "fe80::1%eth0",
        "a b",
        "a;b",
        "-a.org",
        "a..b",
        "x" * 64 + ".org",
        "10.0.0.256",
        "1.2.3",
        "host\n",
        "a_b.org",
        "\uff41.org",
    ],
)
def test_hosts_rejected(value: str) -> None:
    with pytest.raises(ValueError):
        validate.host(value)


def test_hostport_brackets_ipv6() -> None:
    assert validate.hostport("::1", 80) == "[::1]:80"
    assert validate.hostport("10.0.0.1", 80) == "10.0.0.1:80"


@pytest.mark.parametrize("value", ["web", "dirac-sysadmin", "a.b_c"])
def test_consul_names(value: str) -> None:
    assert validate.consul_service_name(value) == value


@pytest.mark.parametrize("value", ["", "a/b", "a b", "-x", "a\n", "é"])
def test_consul_names_rejected(value: str) -> None:
    with pytest.raises(ValueError):
        validate.consul_service_name(value)


def test_ip_parsing_canonical_and_bounded() -> None:
    longest = "0000:0000:0000:0000:0000:ffff:1.2.3.4"  # 45 characters: still an IP
    assert validate.ip_address(longest) == str(ipaddress.ip_address(longest))
    assert validate.ip_address("10.0.0.1") == "10.0.0.1" and validate.is_ip("::1")
    assert validate.parse_ip("10.0.0.1") == ipaddress.ip_address("10.0.0.1")
    # longer than any IP text (45 characters): never parsed, never cached
    assert validate.ip_address("0" * 46) is None and validate.ip_address("1." * 30) is None
    assert validate.ip_address("fe80::1%eth0") is None  # scoped: refused
    assert validate.ip_address("\u0661\u0660.0.0.1") is None  # Arabic-Indic digits: refused
    assert validate.host("::FFFF:A") == "::ffff:a"
